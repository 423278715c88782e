"""`ropd train`: build a TRL trainer from a RunConfig and run it.

One path for every method:
  ropd  GRPOTrainer with the rubric reward (teacher text only)
  grpo  GRPOTrainer with an outcome reward (reference answers)
  opd   per-token reverse KL to a white-box teacher (ropd.opd)
  sod   step-weighted teacher signal on top of a sequence advantage (ropd.opd)

Local teachers and judges (packaged models, paths, Hub ids) are served on loopback for the
duration of the run; API models are called where they live.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from ropd.config import EndpointConfig, RunConfig, TrainingConfig, dump_config
from ropd.data import check_prompt_lengths, load_prompts, to_dataset
from ropd.models import base_model_name, is_local, load_model, load_tokenizer, local_path, pick_dtype
from ropd.teacher import needs_local_server

console = Console(stderr=True)

CHECKPOINT_PREFIX = "checkpoint-"
ZERO_SPREAD_TOLERANCE = 1e-6  # rewards of a group closer than this are a tie: no advantage


class TrainingError(RuntimeError):
    """A run that cannot start or cannot go on; the message says why."""


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
    )


def last_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint-N folder with the largest N, if any."""
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return max(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


# --- the trainer ----------------------------------------------------------------------------------


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that times each phase of a step and does not move the weights on an empty signal.

    - Timing: the seconds of sampling and reward go into the step's metrics (`time/sample`, `time/reward`).
    - Groups without reward spread: a prompt group whose rewards are all equal (within ZERO_SPREAD_TOLERANCE) or
      that got no reward at all (failed, None) gets an advantage of exactly 0. TRL leaves rounding noise there
      (reward minus a float mean), which AdamW's normalised update would turn into a full-size step. Their share
      of the step's groups is logged as `train/zero_variance_group_rate`.
    - Empty micro-batches: when no term of a micro-batch's loss has a gradient (`_has_learning_signal`), its
      forward and backward are skipped and the parameters' gradients stay None. AdamW skips parameters without a
      gradient (no momentum, no weight decay), so an optimizer step all of whose micro-batches were empty leaves
      the weights and the optimizer state byte-identical; it is logged as `train/skipped_update` = 1 (else 0).
      The learning-rate schedule still steps. Not done under DeepSpeed, whose engine owns the optimizer step.
    - Dynamic sampling (optional, DAPO): groups whose every advantage is zero are dropped from the loss mask, so
      they leave the token-mean normaliser; `train/dropped_group_rate` logs their share.
    - Model card: names `base_model` (the student it was trained from) where TRL, given a local folder, names none.
    """

    base_model: str | None = None  # what the student was fine-tuned from, for the model card (ropd.models.base_model_name)

    def __init__(self, *args: Any, dynamic_sampling: bool = False, **kwargs: Any):
        self.dynamic_sampling = dynamic_sampling
        self._window_has_signal = False  # any micro-batch of the current optimizer step had a learning signal
        self._rewards_per_func = None  # the last generation batch's rewards, [completions of all processes, reward functions]
        super().__init__(*args, **kwargs)

    @contextmanager
    def _timed(self, name: str, mode: str = "train"):
        """Append the seconds the block took to the step's metric `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._metrics[mode][name].append(time.perf_counter() - start)

    def _generate(self, prompts: list):
        with self._timed("time/sample"):
            return super()._generate(prompts)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None):
        """TRL's model card, naming `base_model`: TRL reads it from the model's `_name_or_path`, and leaves it out when
        that is a local folder (every packaged, converted or random student)."""
        if self.base_model is None:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        config = self.model.config
        saved = getattr(config, "_name_or_path", "")
        config._name_or_path = self.base_model
        try:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        finally:
            config._name_or_path = saved

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self._timed("time/reward"):
            self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    # --- empty signal -------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        training = self.model.training
        num_generations = self.num_generations if training else self.num_generations_eval
        rewards_per_func, self._rewards_per_func = self._rewards_per_func, None  # this batch's rewards, used once
        if rewards_per_func is not None and num_generations > 1:
            empty = self._groups_without_spread(rewards_per_func, num_generations)
            local = self._local_rows(empty.repeat_interleave(num_generations), output["advantages"].size(0))
            output["advantages"] = output["advantages"].masked_fill(local.to(output["advantages"].device), 0.0)
            if training:
                self._metrics["train"]["train/zero_variance_group_rate"].append(empty.float().mean().item())
        output = self._shape_advantages(output)
        if training and self.dynamic_sampling:
            self._drop_empty_groups(output, num_generations)
        return output

    def _groups_without_spread(self, rewards_per_func, num_generations: int):
        """Bool per prompt group (all processes): its rewards are all equal within ZERO_SPREAD_TOLERANCE, or none was scored.

        Follows TRL's aggregation: the weighted sum of the reward functions ("sum_then_normalize"), or each function
        on its own ("normalize_then_sum": a group is empty only when every function is tied). NaN = no reward.
        """
        import torch

        weights = self.reward_weights.to(rewards_per_func.device)
        if self.multi_objective_aggregation == "sum_then_normalize":
            values = (rewards_per_func * weights).nansum(dim=1, keepdim=True)
            values[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        else:
            values = rewards_per_func
        grouped = values.view(-1, num_generations, values.size(1))
        scored = ~torch.isnan(grouped)
        high = grouped.masked_fill(~scored, -math.inf).amax(dim=1)
        low = grouped.masked_fill(~scored, math.inf).amin(dim=1)
        return (high - low <= ZERO_SPREAD_TOLERANCE).all(dim=1)  # a group with nothing scored gives -inf here: empty

    def _local_rows(self, global_rows, local_count: int):
        """This process's slice of a per-completion tensor over all processes (TRL's process order)."""
        start = self.accelerator.process_index * local_count
        return global_rows[start : start + local_count]

    def _shape_advantages(self, output: dict[str, Any]) -> dict[str, Any]:
        """Hook for subclasses that change the advantages after the empty groups are zeroed (SOD's per-token term)."""
        return output

    def _loss_mask(self, inputs: dict[str, Any]):
        mask = inputs["completion_mask"]
        return mask * inputs["tool_mask"] if "tool_mask" in inputs else mask

    def _row_signal(self, inputs: dict[str, Any]):
        """Bool per completion: it puts a nonzero advantage on at least one token the loss counts."""
        mask = self._loss_mask(inputs).bool()
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            return (advantages != 0) & mask.any(dim=1)
        return ((advantages != 0) & mask).any(dim=1)

    def _has_learning_signal(self, inputs: dict[str, Any]) -> bool:
        """Whether any term of this micro-batch's loss has a gradient, on any process.

        Policy-gradient terms need a nonzero advantage on a counted token; a KL penalty to a reference model
        (beta > 0) or an entropy bonus is a term of its own, so with either the micro-batch is never empty.
        """
        if self.beta != 0.0 or getattr(self, "_entropy_bonus_enabled", False):
            return True
        local = self._row_signal(inputs).any().reshape(1)
        if self.accelerator.num_processes > 1:  # every process must skip or run the backward together
            return bool(self.accelerator.gather(local.int()).any())
        return bool(local.item())

    def _drop_empty_groups(self, output: dict[str, Any], num_generations: int) -> None:
        """Dynamic sampling: groups with no signal on any completion leave the loss mask and the token count."""
        rows = self._row_signal(output)
        keep_groups = self.accelerator.gather(rows.int()).view(-1, num_generations).any(dim=1)
        keep = self._local_rows(keep_groups.repeat_interleave(num_generations), rows.size(0)).to(rows.device)
        completion_mask = output["completion_mask"]
        row_mask = keep[:, None].to(completion_mask.dtype).expand_as(completion_mask)
        output["tool_mask"] = output["tool_mask"] * row_mask if "tool_mask" in output else row_mask.clone()
        output["num_items_in_batch"] = self.accelerator.gather((completion_mask * output["tool_mask"]).sum()).sum()
        self._metrics["train"]["train/dropped_group_rate"].append(1.0 - keep_groups.float().mean().item())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss, except that a training micro-batch without learning signal runs no forward and no backward."""
        if not self.model.training or self.is_deepspeed_enabled:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        import torch

        has_signal = self._has_learning_signal(inputs)
        self._window_has_signal = self._window_has_signal or has_signal
        if self.accelerator.sync_gradients:  # the last micro-batch of this optimizer step
            self._metrics["train"]["train/skipped_update"].append(0.0 if self._window_has_signal else 1.0)
            self._window_has_signal = False
        if has_signal:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        # A leaf outside the model: its backward reaches no parameter, so their gradients stay None.
        return torch.zeros((), device=self.accelerator.device, requires_grad=True)


class StepLog(TrainerCallback):
    """Writes every log to metrics.jsonl and prints a one-line summary per step on stderr."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        logs = dict(logs)
        if "step_time" in logs:
            spent = sum(logs.get(k) or 0.0 for k in ("time/sample", "time/reward", "time/teacher_logits"))
            logs["time/update"] = max(0.0, logs["step_time"] - spent)
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if _finite(v)}}
        with self.path.open("a") as sink:
            sink.write(json.dumps(record) + "\n")
        if "loss" in logs or "reward" in logs:
            console.print(step_summary(record), highlight=False)


class FailureGuard(TrainerCallback):
    """Stops a run whose API calls keep failing, after saving a checkpoint to resume from.

    A step fails when more than `max_failed_group_rate` of its prompt groups got no reward; after
    `max_failed_steps` failed steps in a row the run stops and `error` says what failed (phase,
    prompt, last error message: API errors never carry the key).
    """

    def __init__(self, rewards: list, settings: TrainingConfig, output_dir: Path):
        self.rewards = [r for r in rewards if hasattr(r, "groups_failed")]
        self.max_rate = settings.max_failed_group_rate
        self.max_steps = settings.max_failed_steps
        self.output_dir = output_dir
        self.failed_in_a_row = 0
        self.error: str | None = None
        self._seen = (0, 0)

    def on_step_end(self, args, state, control, **kwargs):
        scored = sum(r.groups_scored for r in self.rewards)
        failed = sum(r.groups_failed for r in self.rewards)
        new_scored, new_failed = scored - self._seen[0], failed - self._seen[1]
        self._seen = (scored, failed)
        if not new_scored:  # no reward was computed in this step
            return
        self.failed_in_a_row = self.failed_in_a_row + 1 if new_failed / new_scored > self.max_rate else 0
        if self.failed_in_a_row >= self.max_steps:
            control.should_save = True
            control.should_training_stop = True
            self.error = self._message(state.global_step)

    def _message(self, step: int) -> str:
        last = next((r.last_failure for r in reversed(self.rewards) if r.last_failure is not None), None)
        cause = f"last failure: prompt '{last.prompt_id}', {last.error}" if last is not None else "no failure recorded"
        return (
            f"training stopped at step {step}: more than {self.max_rate:.0%} of the prompt groups got no reward in each of the "
            f"last {self.failed_in_a_row} steps (training.max_failed_group_rate, training.max_failed_steps); {cause}. "
            f"The run is saved in {self.output_dir / f'{CHECKPOINT_PREFIX}{step}'}: fix the cause, then rerun with --resume."
        )


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def step_summary(record: dict[str, Any]) -> str:
    """One line: reward, failed groups, phase times, tokens and cost by role."""
    parts = [f"step {record['step']}"]
    if (reward := record.get("reward")) is not None:
        parts.append(f"reward {reward:.3f}")
    if (failed := record.get("rubric/group_failure_rate")) is not None:
        parts.append(f"failed groups {failed:.0%}")
    if (tied := record.get("train/zero_variance_group_rate")) is not None:
        parts.append(f"groups without spread {tied:.0%}")
    if record.get("train/skipped_update") == 1.0:
        parts.append("no signal: update skipped")
    times = [
        f"{name} {record[f'time/{name}']:.1f}s"
        for name in ("sample", "teacher", "teacher_logits", "rubric", "judge", "update")
        if f"time/{name}" in record
    ]
    if times:
        parts.append("time " + " ".join(times))
    for role in ("teacher", "rubricator", "judge"):
        tokens = record.get(f"{role}/tokens")
        if tokens:
            parts.append(f"{role} {int(tokens)} tok ${record.get(f'{role}/cost_usd', 0.0):.4f}")
    return " | ".join(parts)


# --- reward functions -----------------------------------------------------------------------------


def serve_local_models(config: RunConfig, stack: ExitStack) -> dict[str, str]:
    """Start one loopback server per local model the run talks to; return {"teacher"/"judge": base URL}.

    The config is left as it is: clients get these URLs with the model name as cache identity, since
    a local server's port changes from run to run.
    """
    if not uses_rubric_reward(config):
        return {}
    served: dict[str, str] = {}

    def url_for(endpoint: EndpointConfig) -> str:  # one server per model: the first role to ask picks its settings
        model = endpoint.model
        if model not in served:
            from ropd.serve import local_server

            console.print(f"starting a local OpenAI-compatible server for {model} ...")
            log = Path(config.output.dir) / f"serve-{model.replace('/', '_')}.log"
            server = local_server(model, models=config.models, log_path=log, dtype=endpoint.serve_dtype, engine=endpoint.serve_engine)
            served[model] = stack.enter_context(server)
        return served[model]

    urls: dict[str, str] = {}
    if needs_local_server(config):
        urls["teacher"] = url_for(config.teacher)
    judge = config.judge_endpoint()
    if not judge.base_url and is_local(judge.model, config.models):
        urls["judge"] = url_for(judge)
    return urls


def uses_rubric_reward(config: RunConfig) -> bool:
    method = config.method
    return method.name == "ropd" or (method.name == "sod" and method.sequence_reward == "rubric")


def reward_functions(config: RunConfig, prompts, cache, urls: dict[str, str] | None = None) -> list:
    """The reward functions of a method: rubric reward, outcome reward, or none (pure OPD)."""
    from ropd.answers import outcome_reward

    method = config.method
    if method.name == "grpo" or (method.name == "sod" and method.sequence_reward == "outcome"):
        if not all(p.answer for p in prompts):
            raise TrainingError(f"method '{method.name}' with an outcome reward needs a reference `answer` in every prompt row")
        return [outcome_reward]
    if method.name == "opd":  # the loss is the reverse KL; an outcome reward is only logged, when answers exist
        return [outcome_reward] if all(p.answer for p in prompts) else []
    from ropd.reward import build_rubric_reward

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
        raise TrainingError(f"{out} already holds {checkpoint.name}; pass --resume to continue that run or choose another --output-dir")
    if config.output.resume and checkpoint is None:
        console.print(f"--resume: no checkpoint in {out} yet, starting from step 0")
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

    `callbacks` are added to the trainer after ropd's own (e.g. `ropd.bench`'s in-run held-out evaluation).
    Usage by role (tokens, requests, cost) is written to <output dir>/usage.json at the end.
    Bad input (data, templates, an unusable cache) stops the run before any model is loaded or any
    call is paid for; API failures that persist stop it with a checkpoint and a TrainingError (FailureGuard).
    """
    from ropd.cache import ResultCache

    out, checkpoint = prepare_output_dir(config)
    (out / "config.yaml").write_text(dump_config(config))
    prompts = load_prompts(config.data.dataset, config.data.split, config.data.max_prompts, config.data.system_prompt)
    if len(prompts) < config.training.prompts_per_step:
        raise TrainingError(f"{config.data.dataset} has {len(prompts)} prompts; prompts_per_step is {config.training.prompts_per_step}")
    if uses_rubric_reward(config):
        from ropd.reward import check_templates

        check_templates(config.judge)
    tokenizer = load_tokenizer(config.student.model, config.models)
    if (limit := prompt_token_limit(config)) is not None:
        check_prompt_lengths(prompts, tokenizer, limit, config.data.dataset)
    cache = ResultCache(config.output.cache or out / "cache.sqlite")
    started = time.perf_counter()
    teacher = white_box_teacher(config, tokenizer) if config.method.name in ("opd", "sod") else None
    with ExitStack() as stack:
        urls = serve_local_models(config, stack)
        model = load_model(config.student.model, config.student.dtype, config.models)
        rewards = reward_functions(config, prompts, cache, urls)
        trainer = build_trainer(config, model, tokenizer, to_dataset(prompts), rewards, teacher)
        trainer.add_callback(StepLog(out / "metrics.jsonl"))
        guard = FailureGuard(rewards, config.training, out)
        trainer.add_callback(guard)
        for callback in callbacks:
            trainer.add_callback(callback)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if guard.error is not None:
            write_usage(rewards, out / "usage.json")
            raise TrainingError(guard.error)
        final = out / "final"
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        save_model_card(trainer, out, final)
    write_usage(rewards, out / "usage.json")
    print_run_summary(rewards, time.perf_counter() - started, final)
    return final


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
    from ropd.opd import check_same_vocabulary

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
        from ropd.teacher_logprobs import ServedTeacherLogprobs, TeacherLogprobsError

        served = ServedTeacherLogprobs(teacher)
        try:
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
    return load_model(name, config.student.dtype, config.models)


def build_trainer(config: RunConfig, model, tokenizer, dataset, rewards: list, teacher=None):
    """GRPOTrainer for ropd/grpo, the white-box trainer for opd/sod (teacher: loaded weights, or a ServedTeacherLogprobs);
    its model card names the student it started from."""
    args = grpo_args(config)
    if teacher is not None:
        from ropd.opd import build_white_box_trainer
        from ropd.teacher_logprobs import ServedTeacherLogprobs

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
        )
    else:
        trainer = TimedGRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            dynamic_sampling=config.training.dynamic_sampling,
        )
    trainer.base_model = base_model_name(config.student.model, config.models)
    return trainer


def write_usage(rewards: list, path: Path) -> None:
    """Tokens, requests and cost by role (teacher, rubricator, judge) of the run's reward functions, as JSON."""
    usage = {}
    for reward in rewards:
        by_role = getattr(reward, "usage_by_role", None)
        if by_role is not None:
            usage.update({role: u.model_dump() for role, u in by_role().items()})
    path.write_text(json.dumps(usage, indent=2) + "\n")


def print_run_summary(rewards: list, seconds: float, final: Path) -> None:
    """Cost and cache summary at the end of a run."""
    console.print(f"done in {seconds / 60:.1f} min; final model in {final}")
    for reward in rewards:
        usage = getattr(reward, "usage_by_role", None)
        if usage is None:
            continue
        for role, u in usage().items():
            console.print(
                f"  {role:<10} {u.requests} requests ({u.cache_hits} cached, {u.retries} retries, {u.failures} failed), "
                f"{u.prompt_tokens + u.completion_tokens} tokens, ${u.cost_usd:.4f}",
                highlight=False,
            )
