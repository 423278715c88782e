"""`ropd train`: build a TRL trainer from a RunConfig and run it.

One path for every method:
  ropd  GRPOTrainer with the rubric reward (teacher text only)
  grpo  GRPOTrainer with an outcome reward (reference answers)
  opd   per-token reverse KL to a white-box teacher (ropd.training.opd)
  sod   step-weighted teacher signal on top of a sequence advantage (ropd.training.opd)

Local teachers and judges (packaged models, paths, Hub ids) are served on loopback for the
duration of the run, one server per model per machine however many processes it runs; API models are called where they live.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from transformers import TrainerCallback
from trl import GRPOConfig

from ropd.config import ConfigError, RunConfig, TrainingConfig, dump_config
from ropd.data import check_prompt_lengths, load_prompts, to_dataset
from ropd.endpoints.models import ModelError, base_model_name, is_local, load_model, load_tokenizer, local_path, pick_dtype
from ropd.reward.answers import outcome_reward
from ropd.reward.setup import build_rubric_reward, check_templates, serve_local_models, uses_rubric_reward
from ropd.tools.toolbox import Toolbox, build_toolbox, chat_template_text
from ropd.training.costs import RunEstimate, estimate_run, format_usd, known_cost, print_estimate, unpriced_models
from ropd.training.distributed import AccelerateProcesses, ProcessFailureError
from ropd.training.opd import build_white_box_trainer, check_same_vocabulary
from ropd.training.preflight import check_endpoints
from ropd.training.resume import CONFIG_FILE, check_resume
from ropd.training.spending import USAGE_FILE, SpendingLimit, UsageLedger, UsageWriter, read_usage
from ropd.training.teacher_logprobs import ServedTeacherLogprobs, TeacherLogprobsError, check_temperature
from ropd.training.trainers import CHECKPOINT_PREFIX, FailureGuard, StepLog, TimedGRPOTrainer, console
from ropd.types import Usage


class TrainingError(RuntimeError):
    """A run that cannot start or cannot go on; the message says why."""


class SpendingLimitReached(TrainingError):
    """The run stopped before a step that could take its spend past output.max_cost_usd; it can be resumed."""


# --- configuration -------------------------------------------------------------------------------


def use_vllm(setting: str) -> bool:
    """vLLM generation: 'on', 'off', or 'auto' (when installed and a GPU is present)."""
    if setting != "auto":
        return setting == "on"
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def grpo_args(config: RunConfig) -> GRPOConfig:
    """Map the run config onto TRL's GRPOConfig.

    One rollout batch = prompts_per_step groups of num_generations completions; it is used for updates_per_batch
    optimizer steps (TRL's num_iterations), each over the whole batch in gradient-accumulated micro-batches.
    """
    import torch

    t = config.training
    on_gpu = torch.cuda.is_available()
    completions_per_step = t.prompts_per_step * t.num_generations
    micro_batch = t.per_device_train_batch_size or completions_per_step
    if completions_per_step % micro_batch or (micro_batch % t.num_generations and micro_batch > t.num_generations):
        raise TrainingError(
            f"per_device_train_batch_size ({micro_batch}) must divide prompts_per_step * num_generations ({completions_per_step})"
        )
    bf16 = on_gpu and pick_dtype(config.student.dtype) == torch.bfloat16
    return GRPOConfig(
        output_dir=config.output.dir,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=completions_per_step // micro_batch,
        num_generations=t.num_generations,
        max_completion_length=t.max_completion_length,
        temperature=t.temperature,
        top_p=t.top_p,
        epsilon=t.epsilon,
        epsilon_high=t.epsilon_high,
        num_iterations=t.updates_per_batch,
        beta=t.beta,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to=t.report_to or "none",
        gradient_checkpointing=t.gradient_checkpointing,
        use_vllm=use_vllm(t.use_vllm),
        vllm_mode=t.vllm_mode,
        use_cpu=not on_gpu,
        bf16=bf16,
        fp16=False,
        log_completions=False,
        disable_tqdm=False,
        chat_template_kwargs=config.student.chat_template_kwargs or None,
        max_tool_calling_iterations=config.tools.max_iterations if config.tools.names else None,
    )


def checkpoint_step(checkpoint: Path | None) -> int:
    """The global step a checkpoint-N folder was saved at (0 without one)."""
    return int(checkpoint.name.removeprefix(CHECKPOINT_PREFIX)) if checkpoint is not None else 0


def last_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint-N folder with the largest N, if any."""
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return max(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


# --- reward functions -----------------------------------------------------------------------------


def reward_functions(config: RunConfig, prompts, cache, urls: dict[str, str] | None = None) -> list:
    """The reward functions of a method: rubric reward, outcome reward, or none (pure OPD)."""
    method = config.method
    if method.name == "grpo" or (method.name == "sod" and method.sequence_reward == "outcome"):
        if not all(p.answer for p in prompts):
            raise TrainingError(f"method '{method.name}' with an outcome reward needs a reference `answer` in every prompt row")
        return [outcome_reward]
    if method.name == "opd":  # the loss is the reverse KL; an outcome reward is only logged, when answers exist
        return [outcome_reward] if all(p.answer for p in prompts) else []
    urls = urls or {}
    groups_log = Path(config.output.dir) / "groups.jsonl"  # per-group records for `ropd inspect`
    return [
        build_rubric_reward(
            config, prompts, cache, teacher_base_url=urls.get("teacher"), judge_base_url=urls.get("judge"), groups_log=groups_log
        )
    ]


# --- the run --------------------------------------------------------------------------------------


def prepare_output_dir(config: RunConfig) -> tuple[Path, Path | None]:
    """Create the output directory; find the checkpoint to resume from, refusing to overwrite a run."""
    out = Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = last_checkpoint(out)
    if checkpoint is not None and not config.output.resume:
        raise TrainingError(
            f"{out} already holds {checkpoint.name}; pass --resume to continue that run (with no --config it continues the "
            f"run's saved config) or choose another --output"
        )
    if config.output.resume and checkpoint is None:
        console.print(f"--resume: no checkpoint in {out} yet, starting a new run from step 0")
    elif checkpoint is not None:
        step = checkpoint_step(checkpoint)
        left = f"{config.training.max_steps - step} steps left" if step < config.training.max_steps else "nothing left to train"
        console.print(f"--resume: resuming {out} from {checkpoint.name} (step {step} of {config.training.max_steps}: {left})")
    return out, checkpoint


def prompt_token_limit(config: RunConfig) -> int | None:
    """data.max_prompt_tokens, else the student's context window minus the completion budget (None when unknown)."""
    if config.data.max_prompt_tokens is not None:
        return config.data.max_prompt_tokens
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(local_path(config.student.model, config.models)).get_text_config()
    context = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return None
    limit = context - config.training.max_completion_length
    if limit < 1:
        raise TrainingError(
            f"training.max_completion_length ({config.training.max_completion_length}) leaves no room for a prompt "
            f"in the student's {context}-token context"
        )
    return limit


def train(config: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run one training job; return the folder of the final model.

    `callbacks` are added to the trainer after ropd's own (e.g. `ropd.bench.runner`'s in-run held-out evaluation).
    Usage by role (tokens, requests, cost; what earlier attempts of a resumed run spent included) is written to
    <output dir>/usage.json after every step. Bad input (data, templates, an unusable cache, a changed config on
    --resume, an endpoint that does not answer) stops the run before any model is loaded or any call is paid for;
    the estimated usage is printed before the student is loaded. API failures that persist stop it with a checkpoint
    and a TrainingError (FailureGuard); output.max_cost_usd stops it with a checkpoint and SpendingLimitReached.
    """
    from ropd.endpoints.cache import ResultCache

    out, checkpoint = prepare_output_dir(config)
    if checkpoint is not None:
        check_resume(config, out)
        if checkpoint_step(checkpoint) >= config.training.max_steps:  # TRL would run one more step: there is none to run
            return finished_run(out, checkpoint)
    prompts, toolbox = check_inputs(config)
    ledger = UsageLedger(read_usage(out / USAGE_FILE) if config.output.resume else None)
    warn_unpriced(config)
    ledger.checks = check_endpoints(config)
    (out / CONFIG_FILE).write_text(dump_config(config))
    tokenizer = load_tokenizer(config.student.model, config.models)
    set_chat_template(tokenizer, config.student.chat_template, tools=toolbox is not None)
    if (limit := prompt_token_limit(config)) is not None:
        check_prompt_lengths(prompts, tokenizer, limit, config.data.dataset)
    start_step = checkpoint_step(checkpoint)
    estimate = estimate_run(config, prompts, tokenizer, start_step=start_step)
    print_estimate(estimate, "estimated API usage of this run", stderr=True)
    spending = spending_limit(config, ledger, estimate, start_step, out)
    cache = ResultCache(config.output.cache or out / "cache.sqlite")
    started = time.perf_counter()
    teacher = white_box_teacher(config, tokenizer) if config.method.name in ("opd", "sod") else None
    grpo_args(config)  # sets accelerate's process state up as the trainer will, before the processes share servers
    with ExitStack() as stack, process_failures_stop_the_run():
        urls = serve_local_models(config, stack, AccelerateProcesses())
        model = load_model(config.student.model, config.student.dtype, config.models)
        rewards = reward_functions(config, prompts, cache, urls)
        ledger.sources = rewards
        trainer = build_trainer(config, model, tokenizer, to_dataset(prompts), rewards, teacher, toolbox)
        trainer.add_callback(StepLog(out / "metrics.jsonl"))
        trainer.add_callback(UsageWriter(ledger, out / USAGE_FILE))
        guard = FailureGuard(rewards, config.training, out)
        trainer.add_callback(guard)
        if spending is not None:
            trainer.add_callback(spending)
        add_group_tables(trainer, config, rewards)
        for callback in callbacks:
            trainer.add_callback(callback)
        mark_end_tokens(trainer, tokenizer, rewards)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        ledger.write(out / USAGE_FILE)
        if guard.error is not None:
            raise TrainingError(guard.error)
        if spending is not None and spending.message is not None:
            step = trainer.state.global_step
            raise SpendingLimitReached(
                f"{spending.message}. The run is saved in {out / f'{CHECKPOINT_PREFIX}{step}'} and what it spent in "
                f"{out / USAGE_FILE}: rerun with --resume and a higher --max-cost to continue."
            )
        final = out / "final"
        save_final_model(trainer, out, final)
        tokenizer.save_pretrained(str(final))
        save_model_card(trainer, out, final)
    print_run_summary(ledger.totals(), time.perf_counter() - started, final)
    return final


@contextmanager
def process_failures_stop_the_run() -> Iterator[None]:
    """A failure on any process of the run (ropd.training.distributed), raised on every process alike, as a TrainingError."""
    try:
        yield
    except ProcessFailureError as exc:
        raise TrainingError(f"training stopped: {exc}") from exc


def mark_end_tokens(trainer, tokenizer, rewards: list) -> None:
    """Give the rubric reward the tokens that end a completion as TRL counts them (its end-of-sequence ids and the pad
    token, as in mask_truncated_completions), so a rollout is cut off when its last token is none of them."""
    ends = {*getattr(trainer, "eos_token_ids", [tokenizer.eos_token_id]), tokenizer.pad_token_id} - {None}
    for reward in rewards:
        if hasattr(reward, "end_token_ids"):
            reward.end_token_ids = ends


def dry_run(config: RunConfig) -> RunEstimate:
    """The estimated API usage of a run, as `train` prints it, without a call or a model load (the student's tokenizer
    only; without it, tokens are counted as characters / 4)."""
    prompts, _ = check_inputs(config)
    warn_unpriced(config, limit_needs_prices=False)
    try:
        tokenizer = load_tokenizer(config.student.model, config.models)
    except (ModelError, OSError, ValueError) as exc:
        console.print(f"note: the student's tokenizer could not be loaded ({exc}); tokens counted as characters / 4", highlight=False)
        tokenizer = None
    checkpoint = last_checkpoint(Path(config.output.dir)) if config.output.resume else None
    return estimate_run(config, prompts, tokenizer, start_step=checkpoint_step(checkpoint))


def finished_run(out: Path, checkpoint: Path) -> Path:
    """The final model of a run whose last checkpoint reached max_steps (TrainingError when it has none)."""
    final = out / "final"
    if not final.is_dir():
        raise TrainingError(
            f"{out}: {checkpoint.name} reached training.max_steps but the run has no final model; raise --max-steps to train "
            f"on, or use {checkpoint} as it is"
        )
    console.print(f"{out} has finished: final model in {final}", highlight=False)
    return final


def check_inputs(config: RunConfig) -> tuple[list, Toolbox | None]:
    """The run's prompts and toolbox, after the checks that need no model: data, templates, tools, peft for LoRA."""
    lora_config(config.training)  # LoRA without peft installed stops the run here, before any model loads
    prompts = load_prompts(config.data.dataset, config.data.split, config.data.max_prompts, config.data.system_prompt)
    if len(prompts) < config.training.prompts_per_step:
        raise TrainingError(f"{config.data.dataset} has {len(prompts)} prompts; prompts_per_step is {config.training.prompts_per_step}")
    if uses_rubric_reward(config):
        check_templates(config.judge)
    return prompts, build_toolbox(config.tools)  # a user tool that does not import stops the run here


def warn_unpriced(config: RunConfig, limit_needs_prices: bool = True) -> None:
    """One warning naming the models without a price (their cost will show as unknown); with a spending limit, an error."""
    unpriced = unpriced_models(config)
    if not unpriced:
        return
    names = ", ".join(f"{model} ({role})" for role, model in unpriced.items())
    if limit_needs_prices and config.output.max_cost_usd is not None:
        raise ConfigError(f"output.max_cost_usd needs a price for every paid model; none for {names}: add them under `prices:`")
    console.print(f"warning: no price for {names}: its cost shows as unknown; add it under `prices:` in the config", highlight=False)


def spending_limit(config: RunConfig, ledger: UsageLedger, estimate: RunEstimate, start_step: int, out: Path) -> SpendingLimit | None:
    """The run's SpendingLimit callback (None without output.max_cost_usd); SpendingLimitReached when even the first
    step would pass the limit."""
    if config.output.max_cost_usd is None:
        return None
    limit = SpendingLimit(ledger, config.output.max_cost_usd, estimate.total("step") or 0.0, config.training.updates_per_batch)
    if start_step < config.training.max_steps and (message := limit.check(start_step)) is not None:
        ledger.write(out / USAGE_FILE)
        raise SpendingLimitReached(f"{message}. Nothing was trained; raise --max-cost to start.")
    return limit


def add_group_tables(trainer, config: RunConfig, rewards: list) -> None:
    """Log a sample of each step's rubric groups as a table to the trackers in training.report_to (ropd.training.tracking)."""
    if not config.training.report_to or not config.training.log_groups:
        return
    from ropd.training.tracking import GroupTables

    sources = [r for r in rewards if hasattr(r, "last_runs")]
    if sources:
        trainer.add_callback(GroupTables(trainer, sources, config.training.report_to, config.training.log_groups, config.training.seed))


def lora_config(training: TrainingConfig):
    """peft's LoraConfig for training.lora_rank (None: full fine-tuning); a clear error when peft is not installed."""
    if training.lora_rank is None:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise ConfigError("training.lora_rank needs peft: pip install 'ropd[lora]' (or pip install peft)") from None
    return LoraConfig(
        r=training.lora_rank,
        lora_alpha=training.lora_alpha or 2 * training.lora_rank,
        lora_dropout=training.lora_dropout,
        target_modules=training.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def save_final_model(trainer, out: Path, final: Path) -> None:
    """The trained student in `final`; a LoRA run saves its adapters in <out>/adapter, then the merged model in `final`
    (a plain model that `ropd eval`, `ropd serve` and a later run load without peft)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not hasattr(model, "merge_and_unload"):
        trainer.save_model(str(final))
        return
    if trainer.is_world_process_zero():
        model.save_pretrained(str(out / "adapter"))
        model.merge_and_unload().save_pretrained(str(final))


def save_model_card(trainer, out: Path, final: Path) -> None:
    """Write the model card (TRL's, naming the real base model) into the run folder and beside the final model."""
    trainer.create_model_card(model_name=out.resolve().name)
    card = Path(trainer.args.output_dir) / "README.md"
    if trainer.is_world_process_zero() and card.is_file():
        shutil.copyfile(card, final / "README.md")


def white_box_teacher(config: RunConfig, student_tokenizer):
    """The teacher of opd/sod, after checking it shares the student's vocabulary: its weights, loaded beside the student,
    or, with teacher.base_url, a ServedTeacherLogprobs for the server (checked to return log-probabilities of given
    tokens before training starts)."""
    teacher = config.teacher
    name = teacher.model
    if teacher.base_url:
        tokenizer = teacher.tokenizer or name
        if not is_local(tokenizer, config.models):
            raise TrainingError(
                f"--method {config.method.name} with the served teacher '{name}' checks that it shares the student's vocabulary: "
                f"set teacher.tokenizer (--teacher-tokenizer) to the teacher's tokenizer (alias, path or Hub id)"
            )
        check_same_vocabulary(student_tokenizer, load_tokenizer(tokenizer, config.models), name)
        served = ServedTeacherLogprobs(teacher)
        try:
            check_temperature(config.training.temperature)
            served.check()
        except TeacherLogprobsError as exc:
            raise TrainingError(str(exc)) from None
        return served
    if not is_local(name, config.models):
        raise TrainingError(
            f"--method {config.method.name} reads the teacher's log-probabilities, so it needs a local teacher (alias, path or "
            f"Hub id), or one behind a server that returns log-probabilities of given tokens (--teacher-base-url, vLLM), not "
            f"the API model '{name}'. Use --method ropd, which needs only the teacher's text."
        )
    check_same_vocabulary(student_tokenizer, load_tokenizer(name, config.models), name)
    dtype = config.student.dtype if teacher.dtype == "auto" else teacher.dtype
    return load_model(name, dtype, config.models)


def set_chat_template(tokenizer, spec: str | None, tools: bool = False) -> None:
    """Give the student the chat template `spec` (student.chat_template), and check it can render tool calls when the run
    has tools (TRL needs that)."""
    if spec is not None:
        try:
            tokenizer.chat_template = chat_template_text(spec)
        except ConfigError as exc:
            raise TrainingError(str(exc)) from None
    if tools:
        from trl.chat_template_utils import supports_tool_calling

        if not supports_tool_calling(tokenizer):
            raise TrainingError(
                "tools.names is set, but the student's chat template cannot render tool calls and tool outputs; set "
                "student.chat_template (--student-chat-template) to one that can, e.g. qwen2_5 for a ChatML student (SmolLM2)"
            )


def build_trainer(config: RunConfig, model, tokenizer, dataset, rewards: list, teacher=None, toolbox: Toolbox | None = None):
    """GRPOTrainer for ropd/grpo, the white-box trainer for opd/sod (teacher: loaded weights, or a ServedTeacherLogprobs),
    with the run's tools (called inside the student's rollouts); its model card names the student it started from."""
    args = grpo_args(config)
    tools = {"tools": list(toolbox.functions)} if toolbox is not None else {}
    if (lora := lora_config(config.training)) is not None:
        tools["peft_config"] = lora
    if teacher is not None:
        served = isinstance(teacher, ServedTeacherLogprobs)
        trainer = build_white_box_trainer(
            config.method.name,
            model=model,
            teacher_model=None if served else teacher,
            teacher_logprobs=teacher if served else None,
            processing_class=tokenizer,
            args=args,
            train_dataset=dataset,
            reward_funcs=rewards,
            method_config=config.method,
            dynamic_sampling=config.training.dynamic_sampling,
            **tools,
        )
    else:
        trainer = TimedGRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            dynamic_sampling=config.training.dynamic_sampling,
            **tools,
        )
    trainer.base_model = base_model_name(config.student.model, config.models)
    return trainer


def print_run_summary(usage: dict[str, Usage], seconds: float, final: Path) -> None:
    """Cost and cache summary at the end of a run (a resumed run's earlier attempts included; unknown costs say so)."""
    console.print(f"done in {seconds / 60:.1f} min; final model in {final}")
    for role, u in usage.items():
        cost = format_usd(u.cost_usd if u.cost_known else None)
        console.print(
            f"  {role:<10} {u.requests} requests ({u.cache_hits} cached, {u.retries} retries, {u.failures} failed), "
            f"{u.prompt_tokens + u.completion_tokens} tokens, {cost}",
            highlight=False,
        )
    if usage:
        console.print(f"  total cost {format_usd(known_cost(usage))}", highlight=False)
