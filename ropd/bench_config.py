"""`ropd bench`'s configuration: the base run every arm shares, the methods and seeds, how arms are evaluated.

`BenchConfig` is the YAML a bench runs from (`load_bench_config`); `arm_config` derives one arm's run config
from it. The runner is `ropd.bench`, the cost model `ropd.bench_costs`, the results files `ropd.bench_report`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ropd.config import ConfigError, JudgeConfig, RunConfig
from ropd.reward import uses_rubric_reward

Method = Literal["ropd", "opd", "sod", "grpo"]
METHOD_LABELS = {"ropd": "rubric OPD", "opd": "logit OPD", "sod": "SOD", "grpo": "outcome GRPO"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSettings(_Strict):
    """Held-out evaluation: one decoding setting for every checkpoint, step 0 and the teacher."""

    dataset: str = Field(description="Held-out prompts (same spec forms as data.dataset), e.g. another reasoning-gym seed.")
    max_prompts: int | None = Field(default=None, ge=1, description="Evaluate only the first N held-out prompts.")
    max_new_tokens: int = Field(default=256, ge=1, description="Tokens generated per answer at most.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (when temperature > 0).")
    n_samples: int = Field(default=1, ge=1, description="Answers per prompt; accuracy is their mean (avg@n).")
    batch_size: int = Field(default=8, ge=1, description="Sequences generated together.")
    seed: int = Field(default=0, description="Sampling seed of the evaluation (the same at every checkpoint).")


class BenchConfig(_Strict):
    """One sample-efficiency benchmark: a base run, the methods and seeds it compares, and how it measures them."""

    base: RunConfig = Field(
        description="The run every arm shares: teacher, student, training prompts, rollouts, optimizer, prices. "
        "Each arm overrides only method.name, training.seed and its output folder; `output` must be left out."
    )
    methods: list[Method] = Field(
        default_factory=lambda: ["ropd", "opd", "sod", "grpo"],
        min_length=1,
        description="Methods compared: ropd (rubric rewards), opd (logit reverse KL), sod (step-weighted logits), grpo (outcome reward).",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Training seeds; every method runs every seed.")
    judge: str | None = Field(
        default="qwen2.5-coder-1.5b",
        description="Rubricator and judge model of the rubric arms (alias, path, or a name served at base.judge.base_url); "
        "null uses the teacher, as published. Stated apart from the teacher in the results.",
    )
    eval: EvalSettings = Field(description="Held-out evaluation settings.")
    eval_every: int = Field(
        ge=1, description="Evaluate every N training samples (rollouts consumed); a multiple of prompts_per_step * num_generations."
    )
    target_accuracy: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Report the samples each method needs to reach this held-out accuracy (optional)."
    )
    evaluate_teacher: bool = Field(
        default=True, description="Measure the teacher's own held-out accuracy (the ceiling); needs local weights."
    )
    teacher_description: str = Field(default="", description="How the teacher was made, stated in the results.")
    price_as: str | None = Field(
        default=None,
        description="Estimate costs as if teacher and judge tokens were billed at this entry of base.prices (e.g. gpt-4o-mini); "
        "unset, each model's own price (local models cost 0).",
    )
    output_dir: str = Field(default="runs/bench", description="Where arms, results.json, results.md and curves.png go.")
    notes: str = Field(default="", description="Free text for results.md: why this budget, what to keep in mind when reading it.")

    @model_validator(mode="before")
    @classmethod
    def _base_inputs(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("base"), dict):
            if "output" in data["base"]:
                raise ValueError("base.output is set by the bench for each arm; use output_dir instead")
            for alias in (data["base"].get("models") or {}).values():  # a teacher made into ~/.cache/...
                if isinstance(alias, dict) and alias.get("kind") == "hub" and str(alias.get("target", "")).startswith("~"):
                    alias["target"] = str(Path(alias["target"]).expanduser())
        return data

    @model_validator(mode="after")
    def _consistent(self) -> BenchConfig:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods: each method may appear once")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: each seed may appear once")
        per_step = self.samples_per_step
        if self.eval_every % per_step:
            raise ValueError(
                f"eval_every ({self.eval_every}) must be a multiple of the samples one step consumes "
                f"(prompts_per_step * num_generations = {per_step})"
            )
        if self.eval.dataset == self.base.data.dataset:
            raise ValueError("eval.dataset is the training dataset; evaluation must use held-out prompts")
        if self.price_as is not None and self.price_as not in self.base.prices:
            raise ValueError(f"price_as: '{self.price_as}' is not in base.prices ({', '.join(self.base.prices)})")
        if self.base.judge.model is not None:
            raise ValueError("base.judge.model: name the rubricator/judge in the top-level `judge` field instead")
        return self

    @property
    def samples_per_step(self) -> int:
        """Rollouts one rollout batch consumes (prompts_per_step * num_generations)."""
        return self.base.training.prompts_per_step * self.base.training.num_generations

    @property
    def eval_every_steps(self) -> int:
        """Optimizer steps between evaluations: a rollout batch makes `updates_per_batch` of them."""
        return self.eval_every // self.samples_per_step * self.base.training.updates_per_batch


def load_bench_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BenchConfig:
    """Read a BenchConfig from YAML (top-level `overrides` replace keys); ConfigError names the file and each bad field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data.update(overrides or {})
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{path}: field '{field}': {message}")
        raise ConfigError("invalid bench configuration:\n  " + "\n  ".join(lines)) from None


def arm_config(bench: BenchConfig, method: str, seed: int) -> RunConfig:
    """The run config of one arm: the base with this method, seed, output folder, shared cache and the stated judge.

    Only an arm trained on rubric rewards names the judge, so a finished opd or grpo arm stays valid
    (same fingerprint) when the bench's judge changes.
    """
    base = bench.base
    out = Path(bench.output_dir)
    method_config = base.method.model_copy(update={"name": method})
    rubric_arm = uses_rubric_reward(base.model_copy(update={"method": method_config}))
    return base.model_copy(
        update={
            "method": method_config,
            "training": base.training.model_copy(update={"seed": seed}),
            "judge": base.judge.model_copy(update={"model": bench.judge}) if rubric_arm else JudgeConfig(),
            "output": base.output.model_copy(
                update={"dir": str(arm_dir(out, method, seed)), "resume": False, "cache": str(out / "cache.sqlite")}
            ),
        },
        deep=True,
    )


def arm_dir(out: Path, method: str, seed: int) -> Path:
    """The folder one arm trains into, under the bench's output_dir."""
    return out / "arms" / f"{method}-seed{seed}"


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able settings: what decides whether a saved result can be reused."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
