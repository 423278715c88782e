"""The run configuration: one pydantic tree, loaded from YAML, overridden by command-line flags.

Every field carries its help text; `ropd train --help`, the YAML files in `ropd/configs/` (also at
`configs/` in a checkout) and the docs all read from here. Unknown keys and bad values are errors
naming the field and where it came from.

Longer than 500 lines on purpose: it is the one pydantic tree of every run setting, whose field descriptions are the
help text, plus the YAML loading and the flags generated from the fields, which read that tree.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PACKAGE_DIR = Path(__file__).resolve().parent  # the installed `ropd` package: templates, configs and the model table ship in it
PACKAGE_ROOT = PACKAGE_DIR.parent  # the source checkout (experiments/, tests/); meaningless for an installed wheel
CONFIGS_DIR = PACKAGE_DIR / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "default.yaml"


ServeEngine = Literal["auto", "llama.cpp", "vllm"]  # what serves a local model: see ropd.endpoints.serve


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and its source."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _flag(name: str, old: str | None = None) -> dict[str, Any]:
    """Field metadata giving a field a short command-line flag of its own (and its old spelling, kept for one release)."""
    return {"flag": name, "old_flag": old} if old else {"flag": name}


class EndpointConfig(_Section):
    """An OpenAI-compatible endpoint and how to call it."""

    model: str = Field(description="Model alias (see `ropd models`), Hub id, local path, or the name an endpoint serves.")
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL. Set it and `model` is passed to that server verbatim; "
        "unset, the alias table decides (API models read OPENAI_BASE_URL, local models get a server on loopback).",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (the key itself never goes in a config).",
    )
    temperature: float = Field(default=1.0, ge=0.0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling probability mass.")
    max_tokens: int = Field(default=1024, ge=1, description="Maximum tokens per completion.")
    seed: int | None = Field(default=None, description="Sampling seed sent to servers that honour it.")
    timeout: float = Field(default=120.0, gt=0, description="Seconds before a request is abandoned and retried.")
    max_retries: int = Field(default=6, ge=0, description="Retries on timeouts, connection errors, 408/409/429/5xx.")
    max_concurrency: int = Field(default=32, ge=1, description="Requests in flight at once.")
    requests_per_minute: float | None = Field(default=None, gt=0, description="Request rate limit (unset: none).")
    tokens_per_minute: float | None = Field(default=None, gt=0, description="Token rate limit, prompt plus completion (unset: none).")
    serve_engine: ServeEngine = Field(
        default="auto",
        description="Engine of the loopback server ropd starts when this model is local: llama.cpp (llama-server, GGUF, CPU) or "
        "vLLM (Hugging Face models, GPU); auto = vLLM for a Hugging Face model when a GPU and vLLM are there, else llama.cpp.",
    )
    serve_dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = Field(
        default="auto",
        description="Weights of a local Hugging Face model when ropd serves it: llama.cpp converts it once to GGUF f16 (auto), "
        "f32, bf16 or q8_0 (int8); vLLM takes the dtype as is. Packaged GGUF models are served as shipped.",
    )
    serve_args: list[str] = Field(
        default_factory=list,
        description="Extra command-line arguments for the loopback server ropd starts when this model is local, after ropd's "
        "own, e.g. [--spec-type, ngram-mod] for llama.cpp's n-gram speculative decoding (drafts from text already in the "
        "context: a judge quoting the answers). Ignored for an endpoint ropd does not start.",
    )
    check: bool = Field(
        default=True,
        description="Before any model is loaded, check a remote endpoint: its key variable is set and it answers (its model "
        "list, else a 1-token completion, counted in usage). Off: for endpoints that allow neither.",
    )


class TeacherConfig(EndpointConfig):
    """The teacher whose answers are distilled."""

    model: str = Field(
        default="gpt-4o", description="Teacher model: alias, Hub id, local path, or served name.", json_schema_extra=_flag("teacher")
    )
    num_answers: int = Field(
        default=4, ge=1, description="Teacher answers fetched per prompt (k).", json_schema_extra=_flag("num-teacher-answers")
    )
    offline_only: bool = Field(default=False, description="Refuse to fetch teacher answers missing from the cache at train time.")
    tokenizer: str | None = Field(
        default=None,
        description="opd/sod with a served teacher (base_url set): the teacher's tokenizer (alias, path or Hub id) for the "
        "same-vocabulary check; unset: the teacher model's own name, which must then resolve to local files.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Weights dtype of a local teacher loaded beside the student for opd/sod (its logits): auto = student.dtype. "
        "bfloat16 halves a float32 teacher's memory on CPU.",
    )
    use_truncated: bool = Field(
        default=False,
        description="Use teacher answers the server cut off at max_tokens (finish reason 'length') as reference answers and "
        "consensus votes. Off: they stay cached, marked as cut off, and are left out (raise max_tokens to get complete ones).",
    )


PUBLISHED_JUDGE: dict[str, Any] = {
    "chunk_size": None,
    "answer_evidence": False,
    "expected_evidence": False,
    "evidence_check": False,
    "verifiable_criteria": False,
    "consensus_criterion": False,
    "score_teacher_answers": "in_call",
}
"""The judge settings of the published ROPD recipe where `JudgeConfig`'s defaults differ: teacher answers and rollouts
judged together in one shuffled call, the judge's booleans only (no evidence fields, no code checks) (arXiv 2605.07396).
The published 4-12 criteria per rubric are JudgeConfig's defaults. `JudgeConfig(**PUBLISHED_JUDGE)`, or these keys
under `judge:` in a YAML config."""

ORACLE = "oracle"
"""judge.model that selects the analysis-only oracle reward (ropd/reward/oracle.py)."""


class JudgeConfig(EndpointConfig):
    """The LLM that writes rubrics (rubricator) and checks answers against them (judge).

    Defaults are the setup that ranked answers best in `ropd judge-eval` (README, Reward quality): 4 answers per
    judge call, evidence first with its check, verifiable targets and the consensus criterion. The published recipe
    is `chunk_size: null` and the four checks off.
    """

    model: str | None = Field(  # type: ignore[assignment]
        default=None,
        description="Rubricator and judge model; unset, the teacher model (and its base URL) is used.",
        json_schema_extra=_flag("judge"),
    )
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature for rubrics and verdicts.")
    max_tokens: int = Field(default=2048, ge=1, description="Maximum tokens per rubric or verdict completion.")
    rubric_template: str = Field(
        default="rubricator",
        description="Rubric template: a name in ropd/templates/ (prompts/ in a checkout) or a path to a .jinja file.",
        json_schema_extra=_flag("rubric-template"),
    )
    verifier_template: str = Field(
        default="verifier",
        description="Judge template: a name in ropd/templates/ (prompts/ in a checkout) or a path to a .jinja file.",
        json_schema_extra=_flag("verifier-template"),
    )
    extra_instructions: str | None = Field(default=None, description="Extra instructions appended to the rubricator prompt.")
    min_criteria: int = Field(default=4, ge=1, description="Fewest criteria a rubric may have.")
    max_criteria: int = Field(default=12, ge=1, description="Most criteria a rubric may have.")
    min_points: int = Field(default=1, ge=0, description="Lowest points a criterion may carry.")
    max_points: int = Field(default=5, ge=1, description="Highest points a criterion may carry.")
    max_reasks: int = Field(default=2, ge=0, description="Re-asks showing the model its error when output fails validation.")
    rubric_refresh: Literal["step", "prompt"] | int = Field(
        default="step", description="When to induce a new rubric: every step (as published), once per prompt, or every N steps."
    )
    chunk_size: int | None = Field(
        default=4,
        ge=1,
        description="Judge at most this many answers per call (unset: the whole group in one call, as published; a small "
        "judge flattens larger groups).",
    )
    score_teacher_answers: Literal["off", "separate", "in_call"] = Field(
        default="off",
        description="Judge the teacher answers too, for diagnostics only (rubric/teacher_score_mean, "
        "rubric/student_beats_weakest_teacher_rate): off; separate = in judge calls of their own (chunk_size applies), so the "
        "rollouts' verdicts do not depend on them; in_call = shuffled in with the rollouts, in the same call(s), as published.",
    )
    answer_evidence: bool = Field(
        default=True,
        description="Have the judge copy each answer's final result before its booleans (`final_answer`). Off, with "
        "expected_evidence off too: booleans only, as published (expected_evidence always asks for both copies).",
    )
    oracle_noise: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="judge.model 'oracle' only: flip each of the oracle's booleans with this probability (ropd/reward/oracle.py).",
    )
    allow_oracle: bool = Field(
        default=False,
        description="Allow judge.model 'oracle': an analysis-only reward decided by code from each prompt's reference solution "
        "(not black-box). Refused unless set; `ropd bench` sets it for its oracle arms.",
    )

    @field_validator("score_teacher_answers", mode="before")
    @classmethod
    def _teacher_scoring_flag(cls, value: Any) -> Any:
        if isinstance(value, bool):  # the earlier on/off switch: on judged them in calls of their own
            return "separate" if value else "off"
        return value

    mode: Literal["group", "single", "consistency"] = Field(
        default="group",
        description="How answers are judged: group = all answers of a prompt in one call (as published); single = one call per "
        "answer; consistency = consistency_samples sampled verdicts per call, each criterion decided by majority.",
    )
    consistency_samples: int = Field(default=3, ge=1, description="consistency mode: sampled verdicts per judge call (n).")
    consistency_temperature: float = Field(
        default=0.7, gt=0.0, description="consistency mode: sampling temperature of the judge (rubrics keep `temperature`)."
    )
    expected_evidence: bool = Field(
        default=True,
        description="Have the judge copy the final result the rubric requires, then each answer's final result, before its "
        "booleans (helps small judges tell right from wrong).",
    )
    consensus_criterion: bool = Field(
        default=True,
        description="Add a criterion checked by code, not the judge: the answer's final result equals the one a majority of "
        "the teacher answers give (math-verify). Left out for a prompt whose teacher answers have no majority, or of which fewer "
        "than half give a final answer (a last number counts as one only when the answers look numeric).",
    )
    consensus_points: int = Field(default=5, ge=1, description="Points of the consensus criterion.")
    verifiable_criteria: bool = Field(
        default=True,
        description="Ask the rubricator for an optional `target` per criterion (a number or text of at most 32 characters a "
        "correct answer contains: the final result or an intermediate one) and let code, not the judge, decide criteria whose "
        "target is usable and grounded: it must occur in at least half of the teacher answers (as their final answer for a "
        "final-result target). A final-result target is met when the answer's extracted final answer equals it; another one "
        "when the answer's text contains it (numbers compared numerically, text after normalising case and whitespace). A "
        "target that is absent, malformed, unsafe, ungrounded or also in the question is dropped: the judge decides. Rules: "
        "ropd/reward/targets.py.",
    )
    evidence_check: bool = Field(
        default=True,
        description="Needs expected_evidence. Compare the judge's copies in code: the result R most of the group's verdicts "
        "copied as `expected` decides every criterion whose text contains R; an answer meets it when the `final_answer` the "
        "judge copied from it equals R (numbers numerically, text normalised), whatever boolean the judge gave. Criteria with "
        "a grounded target (verifiable_criteria) stay with the target.",
    )

    @model_validator(mode="after")
    def _ranges(self) -> JudgeConfig:
        if self.min_criteria > self.max_criteria:
            raise ValueError("min_criteria is larger than max_criteria")
        if self.min_points > self.max_points:
            raise ValueError("min_points is larger than max_points")
        if self.evidence_check and not self.expected_evidence:
            raise ValueError("evidence_check compares the judge's expected and final_answer copies: turn on expected_evidence too")
        if self.model == ORACLE and not self.allow_oracle:
            raise ValueError(
                "judge.model 'oracle' reads each prompt's reference solution (analysis only, not black-box): "
                "set judge.allow_oracle to use it"
            )
        return self


class StudentConfig(_Section):
    """The model being trained."""

    model: str = Field(
        default="smollm2-135m", description="Student model: alias, Hub id or local path.", json_schema_extra=_flag("student")
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype: auto = bfloat16 on GPU, float32 on CPU."
    )
    chat_template: str | None = Field(
        default=None,
        description="Replace the student's chat template: the name of a template TRL ships (e.g. qwen2_5, qwen3; "
        "trl/chat_templates/) or a path to a .jinja file. Tools need a template that renders tool calls; SmolLM2's does not, "
        "and TRL's qwen2_5 fits its <|im_start|>/<|im_end|> tokens. Unset: the student's own.",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra arguments of the student's chat template, passed to TRL (GRPOConfig.chat_template_kwargs), as a "
        "mapping or a JSON object on the command line, e.g. '{\"enable_thinking\": false}' for a Qwen3 student.",
    )

    @field_validator("chat_template_kwargs", mode="before")
    @classmethod
    def _json_mapping(cls, value: Any) -> Any:
        return _parse_json_object(value)


def _parse_json_object(value: Any) -> Any:
    """A command-line JSON object (a string) as a dict; anything else is left for pydantic to check."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not a JSON object: {exc}") from None


class ToolsConfig(_Section):
    """Tools the student (and the teacher) may call inside a rollout."""

    names: list[str] = Field(
        default_factory=list,
        description="Tools: 'python' (a Python interpreter jailed per call: no network, no host files, a fresh temporary folder, "
        "time, memory and output limits) and user functions as 'package.module:function' (type hints and an 'Args:' "
        "docstring give the schema; they run in the training process). Empty: no tools.",
        json_schema_extra=_flag("tools"),
    )
    max_iterations: int = Field(
        default=4,
        ge=1,
        description="Most tool-calling rounds per rollout or teacher answer (TRL's max_tool_calling_iterations); a call "
        "after the last round is left unanswered.",
    )
    python_timeout: float = Field(default=10.0, gt=0, description="Python tool: wall-clock seconds per call.")
    python_memory_mb: int = Field(
        default=512,
        ge=64,
        description="Python tool: memory limit per call, in MiB (all its processes together where the jail gets a "
        "cgroup; else per process, as an address-space limit).",
    )
    python_max_output_bytes: int = Field(
        default=4000, ge=64, description="Python tool: most bytes a call may print (or write to a file); more is an error."
    )
    python_sandbox: Literal["jail", "unsafe-local"] = Field(
        default="jail",
        description="Python tool: where a call runs. jail = inside bubblewrap (own user, namespaces, no network, a "
        "read-only view of the interpreter only, a seccomp filter, limits for the whole call; the tool refuses to run "
        "when the jail cannot start); unsafe-local = an ordinary child process of the trainer, no boundary: trusted "
        "code only (docs/sandbox.md).",
    )
    teacher: bool = Field(
        default=True,
        description="ropd: the teacher's answers use the same tools (OpenAI tools interface; a local teacher through its "
        "server's tool calls); its whole trajectory is cached and shown to the rubricator and judge.",
    )


class DataConfig(_Section):
    """Where prompts come from."""

    dataset: str = Field(
        default="reasoning-gym:gsm_symbolic?size=64&seed=0",
        description="Training prompts: a JSONL/JSON/parquet/CSV file, a Hub dataset id, or reasoning-gym:TASK?size=N&seed=S.",
        json_schema_extra=_flag("dataset"),
    )
    split: str = Field(default="train", description="Split to read from a Hub dataset.")
    eval_dataset: str | None = Field(default=None, description="Held-out prompts for evaluation, same spec forms as `dataset`.")
    max_prompts: int | None = Field(default=None, ge=1, description="Use at most this many prompts.")
    system_prompt: str | None = Field(default=None, description="System message prepended to every prompt that has none.")
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Longest prompt allowed, in tokens under the student's chat template. A longer prompt stops the run before "
        "training with an error naming its row id and length (nothing is truncated or dropped silently). "
        "Unset: the student's context window minus training.max_completion_length.",
    )


class TrainingConfig(_Section):
    """Optimizer and generation settings; they map onto TRL's GRPOConfig."""

    max_steps: int = Field(
        default=500, ge=1, description="Optimizer steps (updates); the run samples max_steps / updates_per_batch rollout batches."
    )
    updates_per_batch: int = Field(
        default=1,
        ge=1,
        description="Optimizer updates per rollout batch (TRL's num_iterations); above 1 the PPO ratio clip "
        "(epsilon, epsilon_high) acts on the later updates. The ROPD paper uses 4; the default 1 keeps one update per "
        "batch of fresh rollouts, which every shipped config and `ropd bench`'s sample counts assume.",
    )
    dynamic_sampling: bool = Field(
        default=False,
        description="DAPO-style dynamic sampling: groups whose every advantage is zero (rewards all equal, or none scored) "
        "are dropped from the loss, so they do not dilute the token-mean normaliser of loss_type dapo or bnpo. "
        "No new rollouts are drawn to refill the batch. No effect on opd, whose loss does not use advantages.",
    )
    learning_rate: float = Field(default=1e-6, gt=0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    num_generations: int = Field(default=8, ge=2, description="Student rollouts per prompt (G).")
    prompts_per_step: int = Field(default=32, ge=1, description="Prompts per optimizer step.")
    per_device_train_batch_size: int | None = Field(
        default=None, ge=1, description="Completions per device micro-batch (unset: prompts_per_step * num_generations)."
    )
    max_completion_length: int = Field(default=1024, ge=1, description="Maximum tokens per student rollout.")
    truncated_reward: float | None = Field(
        default=0.0,
        description="Rubric reward (ropd) of a rollout that was cut off, in place of its rubric score. Cut off as TRL counts "
        "it: the rollout's last token is not an end token (so it stopped at max_completion_length), or a tool rollout ended "
        "on a tool call left unanswered (its output too long, or tools.max_iterations spent). Why: "
        "an unfinished answer states no result, and a judge that credits its working teaches the student to write past "
        "the limit (on the CPU bench, 0.0 lifted rubric OPD from 6.7% to 17.5% held-out accuracy). null: score it like "
        "the others. (TRL's mask_truncated_completions, DAPO's overlong filtering, masks "
        "such rollouts from the loss instead; here they stay in the group and pull its mean.)",
    )
    temperature: float = Field(default=1.0, gt=0, description="Student sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1.0, description="Student nucleus sampling mass.")
    epsilon: float = Field(default=0.2, gt=0, description="PPO clip range, low side.")
    epsilon_high: float = Field(default=0.28, gt=0, description="PPO clip range, high side.")
    beta: float = Field(default=0.0, ge=0, description="KL coefficient to a reference model (0: none, as published).")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(default="dapo", description="TRL loss aggregation; dapo = token-mean.")
    scale_rewards: Literal["none", "group", "batch"] = Field(
        default="none", description="Advantage scaling; none = reward minus group mean (Dr. GRPO, as published)."
    )
    seed: int = Field(default=0, description="Random seed for sampling, shuffling and initialisation.")
    logging_steps: int = Field(default=1, ge=1, description="Log metrics every N steps.")
    save_steps: int = Field(default=50, ge=1, description="Save a checkpoint every N steps.")
    save_total_limit: int | None = Field(default=3, ge=1, description="Keep at most this many checkpoints.")
    max_failed_group_rate: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="A step fails when more than this share of its prompt groups got no reward (teacher, rubric or judge "
        "calls failed after all retries); failed groups are skipped (zero advantage). 1.0: never stop.",
    )
    max_failed_steps: int = Field(
        default=3,
        ge=1,
        description="Stop the run, with a checkpoint and an error naming the failing phase, after this many failed steps in a row.",
    )
    use_vllm: Literal["auto", "on", "off"] = Field(
        default="auto", description="Generate with vLLM: auto = when installed and a GPU is present."
    )
    vllm_mode: Literal["colocate", "server"] = Field(
        default="colocate", description="vLLM colocated with training, or a separate `trl vllm-serve`."
    )
    report_to: list[str] = Field(default_factory=list, description="Trackers passed to TRL (tensorboard, wandb, trackio).")
    log_groups: int = Field(
        default=4,
        ge=0,
        description="Rubric groups per step (a random sample) logged to the report_to trackers as a table (question, rubric, "
        "rewards, correctness where known): a table in wandb and trackio, a markdown text in tensorboard. 0: none.",
    )
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory in the student's backward pass.")
    lora_rank: int | None = Field(
        default=None,
        ge=1,
        description="Train LoRA adapters of this rank (peft, the `lora` extra) on the student's linear layers instead of every "
        "weight: no AdamW state for the frozen weights, so a student that does not fit a full fine-tune can train. The final "
        "model is saved with the adapters merged (a plain model every ropd command loads), the adapters alone in "
        "<output dir>/adapter. LoRA is usually run with a larger learning rate than a full fine-tune. Unset: full fine-tuning.",
    )
    lora_alpha: float | None = Field(
        default=None, gt=0, description="LoRA scaling numerator (the update is alpha/rank x BA); unset: 2 x lora_rank."
    )
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA branch's input.")
    lora_target_modules: list[str] | str = Field(
        default="all-linear",
        description="Modules that get adapters: peft's 'all-linear' (every linear layer but the output head) or a list of "
        "module names, e.g. [q_proj, v_proj].",
    )


class MethodConfig(_Section):
    """Which distillation method trains the student."""

    name: Literal["ropd", "opd", "sod", "grpo"] = Field(
        default="ropd",
        description="ropd = rubric rewards from teacher text; opd = per-token reverse KL to a white-box teacher; "
        "sod = step-weighted teacher signal on a sequence advantage; grpo = outcome reward only.",
        json_schema_extra=_flag("method"),
    )
    sod_delimiter: str = Field(default="\n\n", description="SOD: splits a single-turn answer into steps.")
    sod_steps: Literal["auto", "turns", "delimiter"] = Field(
        default="auto",
        description="SOD: what a step is. turns = each assistant turn between tool outputs (as published for tool-integrated "
        "reasoning); delimiter = text spans between sod_delimiter; auto = turns when tools are on, else delimiter.",
    )
    sod_eps: float = Field(default=1e-6, gt=0, description="SOD: epsilon in the step weight ratio.")
    sod_delta: float = Field(default=0.2, ge=0, description="SOD: step weights are capped at 1 + delta.")
    sod_coef: float = Field(default=1.0, description="SOD: coefficient c of the step-weighted teacher signal.")
    sequence_reward: Literal["rubric", "outcome"] = Field(
        default="rubric", description="SOD: the sequence advantage comes from rubric rewards or an outcome check of reference answers."
    )


class OutputConfig(_Section):
    """Where results go."""

    dir: str = Field(
        default="runs/default",
        description="Output directory: checkpoints, final model, metrics, resolved config.",
        json_schema_extra=_flag("output", old="output-dir"),
    )
    resume: bool = Field(
        default=False, description="Resume from the last checkpoint in the output directory.", json_schema_extra=_flag("resume")
    )
    cache: str | None = Field(
        default=None,
        description="SQLite cache of API results (unset: <output dir>/cache.sqlite).",
        json_schema_extra=_flag("cache", old="output-cache"),
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        description="Spending limit in USD for the run's API calls, what a resumed run spent before included (usage.json). "
        "Before a step's calls go out, the spend so far plus that step's estimate (its upper bound) is checked; past the "
        "limit the run stops with a checkpoint. Needs a price for every paid model. Unset: no limit.",
        json_schema_extra=_flag("max-cost"),
    )


class Price(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0, description="USD per million prompt tokens.")
    output: float = Field(ge=0, description="USD per million completion tokens.")


class ModelAlias(_Section):
    """Where a short model name lives."""

    kind: Literal["api", "hub", "packaged", "random"] = Field(
        description="api endpoint, Hub/local weights, a PyPI-packaged GGUF, or random weights from a config."
    )
    target: str = Field(description="API model name, Hub id or path, packaged model key, or base config for random weights.")
    base_url: str | None = Field(default=None, description="API base URL (api kind); unset, OPENAI_BASE_URL or the OpenAI API.")
    description: str = Field(default="", description="One line shown by `ropd models`.")
    upstream: str | None = Field(
        default=None,
        description="Hub id of the model these weights come from (packaged GGUF copies); named as the base model in the model "
        "card of a student trained from it.",
    )


def _default_prices() -> dict[str, Price]:
    from ropd.training.prices import LIST_PRICES

    return {model: Price(input=rates[0], output=rates[1]) for model, rates in LIST_PRICES.items()}


class RunConfig(_Section):
    """Everything one `ropd train` run needs."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    prices: dict[str, Price] = Field(
        default_factory=_default_prices,
        description="Price table by model name (USD per million tokens), for cost estimates and output.max_cost_usd: the "
        "shipped list prices (ropd/training/prices.py, with the month they were taken) plus what a config adds. A model missing "
        "from it has its cost shown as unknown.",
    )
    models: dict[str, ModelAlias] = Field(default_factory=dict, description="Model aliases added to or overriding the built-in table.")

    @field_validator("prices", mode="after")
    @classmethod
    def _extend_prices(cls, prices: dict[str, Price]) -> dict[str, Price]:
        """A config's prices extend the shipped table (and win where both name a model)."""
        return {**_default_prices(), **prices}

    def judge_endpoint(self) -> EndpointConfig:
        """The judge's endpoint settings with the teacher's model and base URL filled in when unset."""
        data = self.judge.model_dump()
        if self.judge.model is None:
            data["model"] = self.teacher.model
            data["base_url"] = data["base_url"] or self.teacher.base_url
            data["api_key_env"] = self.teacher.api_key_env
        fields = EndpointConfig.model_fields
        return EndpointConfig(**{k: v for k, v in data.items() if k in fields})


# --- loading -------------------------------------------------------------------------------------

FLAG_SECTIONS: dict[str, str] = {
    "teacher": "teacher-",
    "student": "student-",
    "judge": "judge-",
    "data": "data-",
    "training": "",
    "method": "method-",
    "tools": "tools-",
    "output": "output-",
}


def _format_errors(error: ValidationError, source_of: dict[tuple[str, ...], str], default_source: str) -> str:
    lines = []
    for err in error.errors():
        loc = tuple(str(p) for p in err["loc"])
        where = source_of.get(loc[:2], source_of.get(loc[:1], default_source))
        field = ".".join(loc) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{where}: field '{field}': {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `value` at a dotted key (e.g. judge.serve_args) of a nested config mapping, creating sections on the way."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def with_settings(config: RunConfig, settings: list[str]) -> RunConfig:
    """`config` with each 'KEY=YAML' setting (dotted key, YAML value) applied, validated again."""
    data = config.model_dump(mode="json")
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise ConfigError(f"setting '{setting}' is not KEY=VALUE")
        set_dotted(data, key, yaml.safe_load(value))
    return RunConfig.model_validate(data)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig from a YAML file (optional) and dotted-key overrides (flags win).

    Raises ConfigError naming each bad field and whether it came from the file or a flag.
    """
    data: dict[str, Any] = {}
    source_of: dict[tuple[str, ...], str] = {}
    file_label = "defaults"
    if path is not None:
        path = Path(path)
        data = _read_yaml(path)
        file_label = str(path)
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
        section, _, field = dotted.partition(".")
        source_of[(section, field) if field else (section,)] = f"command line ({flag_for(dotted)})"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source_of, file_label)) from None


def redact_url(url: str | None) -> str | None:
    """Drop user:password@ and query strings (which may carry keys) from a URL."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, with URLs redacted. Keys are never in a config, only env var names."""
    data = config.model_dump(mode="json")
    for section in ("teacher", "judge"):
        data[section]["base_url"] = redact_url(data[section]["base_url"])
    for alias in data["models"].values():
        alias["base_url"] = redact_url(alias["base_url"])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# --- command-line flags generated from the fields ------------------------------------------------


def flag_for(dotted: str) -> str:
    """The command-line flag of a dotted config key, e.g. 'teacher.model' -> '--teacher'."""
    section, _, field = dotted.partition(".")
    model = RunConfig.model_fields[section].annotation
    info = model.model_fields[field]  # type: ignore[union-attr]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    name = extra.get("flag") or FLAG_SECTIONS[section] + field.replace("_", "-")
    return f"--{name}"


def _argparse_kwargs(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(typing.get_args(annotation))}
    if origin is list:
        return {"nargs": "*"}
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _argparse_kwargs(args[0])
    return {}


def add_config_flags(
    parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(FLAG_SECTIONS), replaced: dict[str, str] | None = None
) -> None:
    """Add one flag per config field (help text from the field) to an argparse parser.

    Values arrive as strings and pydantic converts them, so a flag and a YAML value are checked
    by the same rules. A field's old flag (`_flag(old=...)`) stays a deprecated spelling for one release; `replaced`
    maps a field to a flag of the command that now sets it (e.g. `judge.model` -> `--model` in `ropd rubric`), which
    makes the field's own flag a deprecated spelling of that one.
    """
    from ropd.flags import add_deprecated  # ropd.flags, not the CLI package: config must not import the command line

    replaced = replaced or {}
    for section in sections:
        model = RunConfig.model_fields[section].annotation
        group = parser.add_argument_group(f"{section} ({model.__doc__.strip().splitlines()[0]})")  # type: ignore[union-attr]
        for field, info in model.model_fields.items():  # type: ignore[union-attr]
            dotted = f"{section}.{field}"
            kwargs = _argparse_kwargs(info.annotation)
            if kwargs.get("action") is None and "choices" not in kwargs:
                kwargs["metavar"] = field.upper()
            default = info.get_default(call_default_factory=True)
            help_text = f"{info.description} (default: {default!r})"
            if dotted in replaced:
                add_deprecated(parser, flag_for(dotted), replaced[dotted])
                continue
            group.add_argument(flag_for(dotted), dest=dotted, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), **kwargs)
            old = (info.json_schema_extra or {}).get("old_flag") if isinstance(info.json_schema_extra, dict) else None
            if old:
                add_deprecated(group, f"--{old}", flag_for(dotted))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides the user actually typed (flags absent from argv are not overrides).

    `null` (or `none`) unsets a field that may be unset, e.g. `--judge-chunk-size null`, as in YAML."""
    return {k: None if _is_null(k, v) else v for k, v in vars(args).items() if "." in k}


def _is_null(dotted: str, value: Any) -> bool:
    """Whether a typed flag value means "unset": `null`/`none` for a field whose type allows None."""
    if not isinstance(value, str) or value.strip().lower() not in ("null", "none"):
        return False
    section, _, field = dotted.partition(".")
    model = RunConfig.model_fields[section].annotation
    annotation = model.model_fields[field].annotation  # type: ignore[union-attr]
    return type(None) in typing.get_args(annotation)
