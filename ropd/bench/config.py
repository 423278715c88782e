"""`ropd bench`'s configuration: the base run every arm shares, the methods and seeds, how arms are evaluated.

`BenchConfig` is the YAML a bench runs from (`load_bench_config`); `arm_config` derives one arm's run config
from it. The runner is `ropd.bench.runner`, the cost model `ropd.bench.costs`, the results files `ropd.bench.report`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ropd.config import ConfigError, JudgeConfig, RunConfig
from ropd.reward.setup import uses_rubric_reward

Method = Literal["ropd", "opd", "sod", "grpo"]
METHOD_LABELS = {"ropd": "rubric OPD", "opd": "logit OPD", "sod": "SOD", "grpo": "outcome GRPO"}
STEP0 = "step0"
"""The name the untrained student goes by in the paired differences."""


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

    def protocol(self) -> str:
        """How answers were drawn, for every table: "greedy", or "avg@n sampled at temperature T, top-p P"."""
        if self.temperature == 0:
            return "greedy" + (f", {self.n_samples} answers" if self.n_samples > 1 else "")
        return f"avg@{self.n_samples} sampled at temperature {self.temperature:g}, top-p {self.top_p:g}"


PUBLISHED_EVAL = {"temperature": 1.0, "top_p": 0.95, "n_samples": 16}
"""The papers' evaluation protocol (avg@16 sampled at temperature 1.0, top-p 0.95; arXiv 2605.07396): lay these keys
over `eval` (and `validation`) for the published protocol instead of greedy decoding."""


class ArmSpec(_Strict):
    """One arm: a method plus settings laid over the base run, so a variant needs no code."""

    method: Method = Field(description="ropd (rubric rewards), opd (logit reverse KL), sod (step-weighted logits), grpo (outcome).")
    label: str = Field(default="", description="Name in tables and plots; empty: the method's name.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Run-config keys laid over `base` for this arm (nested like the YAML, e.g. {judge: {chunk_size: null}}).",
    )
    learning_rate_from: str | None = Field(
        default=None,
        description="Use the learning rate the sweep chose for this other arm instead of sweeping this one (e.g. oracle arms "
        "take rubric OPD's).",
    )
    learning_rates: list[float] | None = Field(
        default=None,
        min_length=1,
        description="This arm's learning-rate sweep instead of the bench's `learning_rates` (e.g. fewer rates for a slow arm); "
        "unset: the bench's.",
    )


class BenchConfig(_Strict):
    """One sample-efficiency benchmark: a base run, the methods and seeds it compares, and how it measures them."""

    base: RunConfig = Field(
        description="The run every arm shares: teacher, student, training prompts, rollouts, optimizer, prices. "
        "Each arm overrides only method.name, training.seed and its output folder; `output` must be left out."
    )
    methods: list[Method] | None = Field(
        default=None,
        min_length=1,
        description="Shorthand for arms that run a method with the base settings, named after it: ropd (rubric rewards), opd "
        "(logit reverse KL), sod (step-weighted logits), grpo (outcome reward). Unset and no `arms`: all four.",
    )
    arms: dict[str, ArmSpec] = Field(
        default_factory=dict,
        description="Arms by name (a method plus overrides), in run order; use instead of `methods` for variants such as "
        "ropd-published or oracle arms. The headline compares the arms named `opd` and `ropd`.",
    )
    validation: EvalSettings | None = Field(
        default=None,
        description="Validation prompts (another generator seed than training and held-out), used only to choose settings: "
        "the learning-rate sweep evaluates on them.",
    )
    learning_rates: list[float] = Field(
        default_factory=list,
        description="Learning-rate sweep: each arm (without learning_rate_from) trains once per rate on the first seed with "
        "the full budget, evaluated on `validation`; the rate with the best final validation accuracy (ties: the smaller) "
        "then runs every seed. Empty: base.training.learning_rate for every arm.",
    )
    bootstrap_samples: int = Field(
        default=2000, ge=100, description="Bootstrap resamples (over held-out prompts and seeds) behind every 95% interval."
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
        if self.methods is not None and self.arms:
            raise ValueError("give either methods or arms, not both")
        if self.methods is not None and len(set(self.methods)) != len(self.methods):
            raise ValueError("methods: each method may appear once")
        if not self.arms:
            self.arms = {m: ArmSpec(method=m) for m in self.methods or ("ropd", "opd", "sod", "grpo")}
        self.methods = None  # arms say it all (and a dumped bench.yaml reloads)
        for name, spec in self.arms.items():
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"arms: name '{name}' may hold only letters, digits, '-' and '_' (it names folders)")
            if spec.learning_rate_from is not None and spec.learning_rate_from not in self.arms:
                raise ValueError(f"arms.{name}.learning_rate_from: no arm named '{spec.learning_rate_from}'")
            if spec.learning_rates is not None and spec.learning_rate_from is not None:
                raise ValueError(f"arms.{name}: give learning_rates or learning_rate_from, not both")
            if "output" in spec.overrides:
                raise ValueError(f"arms.{name}.overrides: output is set by the bench for each arm")
        if self.swept_rates() and self.validation is None:
            raise ValueError("learning_rates: a sweep needs `validation` prompts to choose on")
        if self.validation is not None and self.validation.dataset in (self.eval.dataset, self.base.data.dataset):
            raise ValueError("validation.dataset must differ from both the training and the held-out prompts")
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
        for name in self.arms:
            arm_config(self, name, self.seeds[0])  # each arm's overrides make a valid run config
        return self

    def arm_rates(self, name: str) -> list[float]:
        """The learning rates the sweep tries for this arm: its own list, else the bench's (empty: no sweep)."""
        spec = self.arms[name]
        return [] if spec.learning_rate_from is not None else spec.learning_rates or self.learning_rates

    def sweep_plan(self) -> dict[str, list[float]]:
        """The rates each swept arm tries, by arm (arms that take another's rate, or have none to try, left out)."""
        return {name: rates for name in self.arms if (rates := self.arm_rates(name))}

    def swept_rates(self) -> list[float]:
        """Every rate some arm's sweep tries, ascending."""
        return sorted({rate for name in self.arms for rate in self.arm_rates(name)})

    def label(self, name: str) -> str:
        """An arm's name in tables: its label, or the method's for an arm named after its method."""
        spec = self.arms[name]
        return spec.label or (METHOD_LABELS[spec.method] if name == spec.method else name)

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


def arm_config(bench: BenchConfig, name: str, seed: int, learning_rate: float | None = None, sweep: bool = False) -> RunConfig:
    """The run config of one arm: the base with the arm's overrides, method, seed, learning rate, output folder, shared
    cache and the stated judge (unless the arm's overrides name one).

    Only an arm trained on rubric rewards names the judge, so a finished opd or grpo arm stays valid
    (same fingerprint) when the bench's judge changes. `sweep` puts the arm under arms/sweep/.
    """
    spec = bench.arms[name]
    data = _deep_merge(bench.base.model_dump(mode="json"), spec.overrides)
    data["method"]["name"] = spec.method
    data["training"]["seed"] = seed
    if learning_rate is not None:
        data["training"]["learning_rate"] = learning_rate
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"arms.{name}.overrides: {exc}") from None
    rubric_arm = uses_rubric_reward(config)
    judge = config.judge if config.judge.model is not None else config.judge.model_copy(update={"model": bench.judge})
    out = Path(bench.output_dir)
    folder = sweep_dir(out, name, learning_rate) if sweep else arm_dir(out, name, seed)
    return config.model_copy(
        update={
            "judge": judge if rubric_arm else JudgeConfig(),
            "output": config.output.model_copy(update={"dir": str(folder), "resume": False, "cache": str(out / "cache.sqlite")}),
        },
        deep=True,
    )


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def arm_dir(out: Path, name: str, seed: int) -> Path:
    """The folder one arm trains into, under the bench's output_dir."""
    return out / "arms" / f"{name}-seed{seed}"


def sweep_dir(out: Path, name: str, learning_rate: float | None) -> Path:
    """The folder one sweep run trains into: arms/sweep/<arm>-lr<rate>."""
    return out / "arms" / "sweep" / f"{name}-lr{learning_rate:g}"


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able settings: what decides whether a saved result can be reused."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
