"""`ropd bench`: how many student samples each method needs, on one budget axis, from one teacher.

For every method x seed the bench trains the same student on the same prompts (same order, same
rollouts per prompt, same optimizer settings) and measures held-out accuracy on the in-memory
model every `eval_every` training samples (rollouts consumed), with the same greedy decoding at
every checkpoint. Step 0 (the floor) and the teacher (the ceiling) are measured once with those
settings. Output, in `output_dir`:

  results.json   every curve, per-method summaries, costs and the headline ratio
  results.md     the table a reader wants
  curves.png     accuracy vs training samples and vs teacher tokens

Headline: samples logit OPD needs to reach its own final accuracy / samples rubric OPD needs to
reach that same accuracy (mean curves over seeds). A finished arm is read back on a rerun, never
trained again; an unfinished one starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from transformers import TrainerCallback

from ropd.config import ConfigError, JudgeConfig, RunConfig
from ropd.data import load_prompts
from ropd.reward import uses_rubric_reward
from ropd.types import PromptRow

console = Console(stderr=True)

Method = Literal["ropd", "opd", "sod", "grpo"]
METHOD_LABELS = {"ropd": "rubric OPD", "opd": "logit OPD", "sod": "SOD", "grpo": "outcome GRPO"}
RUBRIC_ROLES = ("rubricator", "judge")


# --- configuration -------------------------------------------------------------------------------


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
    return out / "arms" / f"{method}-seed{seed}"


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- results types --------------------------------------------------------------------------------


class CurvePoint(BaseModel):
    """Held-out accuracy after `samples` training rollouts."""

    step: int
    samples: int
    accuracy: float
    answered: float
    truncated: float
    mean_completion_tokens: float
    teacher_tokens: int = Field(default=0, description="Teacher tokens spent so far (see ArmResult.teacher_tokens).")
    judge_tokens: int = Field(default=0, description="Rubricator plus judge tokens spent so far.")
    eval_seconds: float = 0.0


class ArmResult(BaseModel):
    """One method x seed: its curve and what it cost."""

    method: str
    seed: int
    fingerprint: str = Field(description="Hash of the arm's run config and the eval settings; a rerun reuses only a match.")
    curve: list[CurvePoint]
    steps: int
    samples: int
    teacher_tokens: int = Field(
        description="ropd: tokens of the k teacher answers (prompt once per request plus answers) for every distinct prompt trained on; "
        "opd/sod: tokens the teacher scored (prompt plus rollout, one forward pass each); grpo: 0."
    )
    judge_tokens: int
    judge_requests: int
    cost_usd: float
    wall_seconds: float = Field(description="Training plus in-run evaluation, server start-up included.")
    eval_seconds: float
    failed_group_rate: float | None = Field(default=None, description="Share of rubric groups with no reward (rubric arms).")
    mean_reward: float | None = Field(default=None, description="Mean training reward over steps (rubric, outcome or logged outcome).")


class RatioResult(BaseModel):
    """The headline: samples logit OPD needs for its final accuracy / samples rubric OPD needs for the same."""

    target_accuracy: float | None
    opd_samples: int | None
    ropd_samples: int | None
    ratio: float | None
    status: Literal["reached", "not reached", "undefined"]
    note: str


# --- in-run evaluation ------------------------------------------------------------------------------


class HeldOutEval(TrainerCallback):
    """Evaluates the in-memory model every `every_steps` optimizer steps and at the last step; appends to `sink` (JSONL).

    `samples_per_step` is the rollouts of one rollout batch, which serves `updates_per_batch` optimizer steps.
    """

    def __init__(
        self,
        prompts: list[PromptRow],
        settings: EvalSettings,
        tokenizer,
        every_steps: int,
        samples_per_step: int,
        sink: Path,
        updates_per_batch: int = 1,
    ):
        self.prompts, self.settings, self.tokenizer = prompts, settings, tokenizer
        self.every_steps, self.samples_per_step, self.sink = every_steps, samples_per_step, sink
        self.updates_per_batch = updates_per_batch
        self.points: list[CurvePoint] = []
        self.teacher_tokens_seen: dict[int, int] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every_steps == 0 or step >= state.max_steps:
            self.teacher_tokens_seen[step] = int(state.num_input_tokens_seen or 0)
            batches = -(-step // self.updates_per_batch)  # rollout batches drawn by this step
            point = evaluate_point(model, self.tokenizer, self.prompts, self.settings, step, batches * self.samples_per_step)
            self.points.append(point)
            with self.sink.open("a") as f:
                f.write(point.model_dump_json() + "\n")
            console.print(f"eval step {step} ({point.samples} samples): accuracy {point.accuracy:.3f}", highlight=False)


def evaluate_point(model, tokenizer, prompts: list[PromptRow], settings: EvalSettings, step: int, samples: int) -> CurvePoint:
    from ropd.eval import evaluate

    result = evaluate(
        model,
        tokenizer,
        prompts,
        n_samples=settings.n_samples,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        batch_size=settings.batch_size,
        seed=settings.seed,
        progress=False,
    )
    return CurvePoint(
        step=step,
        samples=samples,
        accuracy=result.accuracy,
        answered=result.answered,
        truncated=result.truncated,
        mean_completion_tokens=result.mean_completion_tokens,
        eval_seconds=result.seconds,
    )


def evaluate_model(name: str, config: RunConfig, prompts: list[PromptRow], settings: EvalSettings, path: Path) -> dict[str, Any]:
    """Held-out accuracy of a model loaded by name (step 0, the teacher), cached in `path` (JSON)."""
    from ropd.models import load_model, load_tokenizer

    key = fingerprint({"model": name, "models": config.models, "dtype": config.student.dtype, "eval": settings.model_dump()})
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == key:
            return {"num_prompts": len(prompts), **saved}
    console.print(f"evaluating {name} on {len(prompts)} held-out prompts ...")
    model = load_model(name, config.student.dtype, config.models)
    point = evaluate_point(model, load_tokenizer(name, config.models), prompts, settings, 0, 0)
    saved = {"fingerprint": key, "model": name, "num_prompts": len(prompts), **point.model_dump()}
    path.write_text(json.dumps(saved, indent=2) + "\n")
    return saved


# --- one arm ---------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cumulative_by_step(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[int, float]:
    """Running total, per step, of the per-step deltas logged under `keys`."""
    totals: dict[int, float] = {}
    running = 0.0
    for record in sorted((r for r in records if any(k in r for k in keys)), key=lambda r: r["step"]):
        running += sum(record.get(k) or 0.0 for k in keys)
        totals[record["step"]] = running
    return totals


def total_at(totals: dict[int, float], step: int) -> float:
    return max((v for s, v in totals.items() if s <= step), default=0.0)


def ropd_teacher_tokens(batches: int, prompts_per_step: int, tokens_per_prompt: dict[str, int]) -> int:
    """Teacher tokens of the distinct prompts of the first `batches` rollout batches: every epoch covers each prompt once
    (TRL's sampler), so that is min(N, batches * prompts_per_step) prompts, at the mean tokens per prompt."""
    if not tokens_per_prompt:
        return 0
    seen = min(len(tokens_per_prompt), batches * prompts_per_step)
    return round(sum(tokens_per_prompt.values()) * seen / len(tokens_per_prompt))


def arm_fingerprint(bench: BenchConfig, config: RunConfig) -> str:
    """What makes an arm's result: its run config, the evaluation settings and how often it is evaluated."""
    return fingerprint({"run": config.model_dump(mode="json"), "eval": bench.eval.model_dump(), "every": bench.eval_every})


def finished_arm(bench: BenchConfig, method: str, seed: int) -> ArmResult | None:
    """The arm's saved result when it finished with these settings; None when it has not finished.

    A finished arm made with other settings is an error: its folder would be overwritten."""
    config = arm_config(bench, method, seed)
    done = Path(config.output.dir) / "arm.json"
    if not done.is_file():
        return None
    saved = ArmResult.model_validate_json(done.read_text())
    if saved.fingerprint != arm_fingerprint(bench, config):
        raise ConfigError(f"{done} was made with other settings than this bench config; choose another output_dir or remove it")
    return saved


def run_arm(
    bench: BenchConfig,
    method: str,
    seed: int,
    eval_prompts: list[PromptRow],
    step0: dict[str, Any],
    tokens_per_prompt: dict[str, int],
) -> ArmResult:
    """Train one arm with in-run evaluation, or read it back when a finished one with the same settings exists."""
    from ropd.models import load_tokenizer
    from ropd.training import train

    config = arm_config(bench, method, seed)
    key = arm_fingerprint(bench, config)
    out = Path(config.output.dir)
    saved = finished_arm(bench, method, seed)
    if saved is not None:
        console.print(f"{method} seed {seed}: finished earlier, read back from {out / 'arm.json'}")
        keep_step_records(out, Path(bench.output_dir) / "steps", f"{method}-seed{seed}")
        return saved
    if out.exists():
        console.print(f"{method} seed {seed}: unfinished arm in {out}, starting it over")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer = load_tokenizer(config.student.model, config.models)
    sink, updates = out / "curve.jsonl", config.training.updates_per_batch
    callback = HeldOutEval(eval_prompts, bench.eval, tokenizer, bench.eval_every_steps, bench.samples_per_step, sink, updates)
    started = time.perf_counter()
    console.rule(f"{METHOD_LABELS[method]} ({method}), seed {seed}")
    train(config, callbacks=[callback])
    wall = time.perf_counter() - started
    result = summarise_arm(bench, config, method, seed, key, callback, step0, tokens_per_prompt, wall)
    (out / "arm.json").write_text(result.model_dump_json(indent=2) + "\n")
    keep_step_records(out, Path(bench.output_dir) / "steps", f"{method}-seed{seed}")
    return result


def keep_step_records(arm_dir: Path, steps_dir: Path, name: str) -> None:
    """Copy an arm's per-step metrics, held-out curve and usage out of its folder (which holds weights and is not
    committed) into `steps/`, so the figures a report cites keep their evidence."""
    steps_dir.mkdir(parents=True, exist_ok=True)
    for source in ("metrics.jsonl", "curve.jsonl", "usage.json", "groups.jsonl"):
        if (arm_dir / source).is_file():
            shutil.copyfile(arm_dir / source, steps_dir / f"{name}-{source}")


def summarise_arm(
    bench: BenchConfig,
    config: RunConfig,
    method: str,
    seed: int,
    key: str,
    callback: HeldOutEval,
    step0: dict[str, Any],
    tokens_per_prompt: dict[str, int],
    wall: float,
) -> ArmResult:
    """Join the eval points with the costs logged in metrics.jsonl and usage.json."""
    out = Path(config.output.dir)
    metrics = read_metrics(out / "metrics.jsonl")
    judge_totals = cumulative_by_step(metrics, tuple(f"{role}/tokens" for role in RUBRIC_ROLES))
    start = CurvePoint(**{k: v for k, v in step0.items() if k in CurvePoint.model_fields})
    start = start.model_copy(update={"eval_seconds": 0.0})
    points = [start]
    for point in callback.points:
        if method == "ropd":
            batches = -(-point.step // config.training.updates_per_batch)
            teacher = ropd_teacher_tokens(batches, config.training.prompts_per_step, tokens_per_prompt)
        elif method in ("opd", "sod"):
            teacher = callback.teacher_tokens_seen.get(point.step, 0)
        else:
            teacher = 0
        points.append(point.model_copy(update={"teacher_tokens": teacher, "judge_tokens": round(total_at(judge_totals, point.step))}))
    last = points[-1]
    usage = json.loads((out / "usage.json").read_text()) if (out / "usage.json").is_file() else {}
    rewards = [m["reward"] for m in metrics if "reward" in m]
    failures = [m["rubric/group_failure_rate"] for m in metrics if "rubric/group_failure_rate" in m]
    return ArmResult(
        method=method,
        seed=seed,
        fingerprint=key,
        curve=points,
        steps=last.step,
        samples=last.samples,
        teacher_tokens=last.teacher_tokens,
        judge_tokens=last.judge_tokens,
        judge_requests=sum(int(usage.get(role, {}).get("requests", 0)) for role in RUBRIC_ROLES),
        cost_usd=arm_cost(bench, config, method, last, usage, tokens_per_prompt),
        wall_seconds=round(wall, 1),
        eval_seconds=round(sum(p.eval_seconds for p in callback.points), 1),
        failed_group_rate=statistics.fmean(failures) if failures else None,
        mean_reward=statistics.fmean(rewards) if rewards else None,
    )


def arm_cost(bench: BenchConfig, config: RunConfig, method: str, last: CurvePoint, usage: dict, tokens_per_prompt: dict[str, int]) -> float:
    """USD for teacher and judge tokens: at `price_as` when set (teacher-scored tokens as input), else each model's own price."""
    prices = config.prices
    if bench.price_as is None:
        teacher_price = prices.get(config.teacher.model)
        judge_cost = sum(float(usage.get(role, {}).get("cost_usd", 0.0)) for role in RUBRIC_ROLES)
        teacher_cost = last.teacher_tokens * teacher_price.input / 1e6 if teacher_price and method in ("opd", "sod") else 0.0
        if method == "ropd" and teacher_price:
            teacher_cost = last.teacher_tokens * teacher_price.output / 1e6
        return round(judge_cost + teacher_cost, 6)
    price = prices[bench.price_as]
    judge_in = sum(int(usage.get(role, {}).get("prompt_tokens", 0)) for role in RUBRIC_ROLES)
    judge_out = sum(int(usage.get(role, {}).get("completion_tokens", 0)) for role in RUBRIC_ROLES)
    # ropd: answers are written (output price; their prompts, a small share, too: an upper bound); opd/sod: read (input)
    teacher = last.teacher_tokens * (price.output if method == "ropd" else price.input)
    return round((teacher + judge_in * price.input + judge_out * price.output) / 1e6, 6)


# --- teacher answers (rubric arms) -----------------------------------------------------------------


def prefetch_teacher_answers(bench: BenchConfig, seed: int) -> dict[str, int]:
    """Fetch the rubric arms' k teacher answers once into the shared cache; return teacher tokens per prompt.

    Tokens are counted with the teacher's tokenizer when it has local weights (the student's otherwise): the
    prompt once per request plus every answer, so the count does not depend on what the cache already held.
    """
    from ropd.eval import render_prompt
    from ropd.models import is_local, load_tokenizer
    from ropd.teacher import teach

    config = arm_config(bench, "ropd", seed)
    summary = teach(config, progress=True)
    if "error" in summary:
        raise RuntimeError(f"teacher answers for the rubric arms could not be fetched: {summary['error']}")
    from ropd.cache import ResultCache
    from ropd.teacher import open_teacher_pool

    name = config.teacher.model if is_local(config.teacher.model, config.models) else config.student.model
    tokenizer = load_tokenizer(name, config.models)
    rows = load_prompts(config.data.dataset, config.data.split, config.data.max_prompts, config.data.system_prompt)
    counts: dict[str, int] = {}
    with ResultCache(Path(config.output.cache)) as cache, open_teacher_pool(config, cache, rows) as pool:  # type: ignore[arg-type]
        for row in rows:
            answers = pool.cached(row)
            prompt = render_prompt(tokenizer, [m.model_dump() for m in row.prompt])
            counts[row.id] = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + sum(
                len(tokenizer(a or "", add_special_tokens=False)["input_ids"]) for a in answers
            )
    return counts


# --- summaries -------------------------------------------------------------------------------------


def mean_curve(arms: list[ArmResult], field: str = "samples") -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) accuracy across seeds at each x shared by every seed (x = samples or teacher_tokens)."""
    if not arms:
        return []
    xs = sorted(set.intersection(*(set(p.samples for p in a.curve) for a in arms)))
    rows = []
    for samples in xs:
        accs = [next(p.accuracy for p in a.curve if p.samples == samples) for a in arms]
        points = [next(p for p in a.curve if p.samples == samples) for a in arms]
        x = samples if field == "samples" else statistics.fmean(getattr(p, field) for p in points)
        rows.append((x, statistics.fmean(accs), min(accs), max(accs)))
    return rows


def samples_to_reach(curve: list[tuple[float, float]], target: float) -> int | None:
    """First x (samples) at which the accuracy reaches `target` (1e-9 tolerance), None when it never does."""
    for samples, accuracy in curve:
        if accuracy >= target - 1e-9:
            return int(samples)
    return None


def sample_efficiency_ratio(opd_curve: list[tuple[float, float]], ropd_curve: list[tuple[float, float]]) -> RatioResult:
    """Samples logit OPD needs to reach its final accuracy / samples rubric OPD needs to reach that accuracy.

    Curves are (samples, accuracy) in order, starting at step 0. Undefined when logit OPD ends no higher than it
    started (there is nothing to reach).
    """
    if not opd_curve or not ropd_curve:
        return RatioResult(target_accuracy=None, opd_samples=None, ropd_samples=None, ratio=None, status="undefined", note="no curve")
    target = opd_curve[-1][1]
    if target <= opd_curve[0][1] + 1e-9:
        return RatioResult(
            target_accuracy=target,
            opd_samples=None,
            ropd_samples=samples_to_reach(ropd_curve, target),
            ratio=None,
            status="undefined",
            note=f"logit OPD ends at {target:.3f}, no higher than its step-0 accuracy {opd_curve[0][1]:.3f}: nothing to reach",
        )
    opd_samples = samples_to_reach(opd_curve, target)
    ropd_samples = samples_to_reach(ropd_curve, target)
    if ropd_samples is None:
        note = f"rubric OPD never reached logit OPD's final accuracy {target:.3f} (best {max(a for _, a in ropd_curve):.3f})"
        return RatioResult(target_accuracy=target, opd_samples=opd_samples, ropd_samples=None, ratio=None, status="not reached", note=note)
    ratio = opd_samples / ropd_samples  # type: ignore[operator]
    note = f"logit OPD needs {opd_samples} samples for {target:.3f}; rubric OPD reaches it after {ropd_samples}"
    return RatioResult(target_accuracy=target, opd_samples=opd_samples, ropd_samples=ropd_samples, ratio=ratio, status="reached", note=note)


def method_summary(bench: BenchConfig, method: str, arms: list[ArmResult]) -> dict[str, Any]:
    finals = [a.curve[-1].accuracy for a in arms]
    curve = mean_curve(arms)
    target = bench.target_accuracy
    return {
        "method": method,
        "label": METHOD_LABELS[method],
        "seeds": [a.seed for a in arms],
        "final_accuracy_mean": statistics.fmean(finals),
        "final_accuracy_min": min(finals),
        "final_accuracy_max": max(finals),
        "best_accuracy_mean": max(m for _, m, _, _ in curve),
        "samples": arms[0].samples,
        "samples_to_target": samples_to_reach([(x, m) for x, m, _, _ in curve], target) if target is not None else None,
        "teacher_tokens_mean": statistics.fmean(a.teacher_tokens for a in arms),
        "judge_tokens_mean": statistics.fmean(a.judge_tokens for a in arms),
        "cost_usd_mean": statistics.fmean(a.cost_usd for a in arms),
        "wall_seconds_mean": statistics.fmean(a.wall_seconds for a in arms),
        "eval_seconds_mean": statistics.fmean(a.eval_seconds for a in arms),
        "mean_reward": statistics.fmean(a.mean_reward for a in arms if a.mean_reward is not None)
        if any(a.mean_reward is not None for a in arms)
        else None,
        "failed_group_rate": statistics.fmean(a.failed_group_rate for a in arms if a.failed_group_rate is not None)
        if any(a.failed_group_rate is not None for a in arms)
        else None,
        "curve": [{"samples": x, "mean": m, "min": lo, "max": hi} for x, m, lo, hi in curve],
    }


def headline(by_method: dict[str, list[ArmResult]]) -> RatioResult:
    if "opd" not in by_method or "ropd" not in by_method:
        return RatioResult(
            target_accuracy=None, opd_samples=None, ropd_samples=None, ratio=None, status="undefined", note="needs both opd and ropd arms"
        )
    pairs = {m: [(x, mean) for x, mean, _, _ in mean_curve(arms)] for m, arms in by_method.items()}
    return sample_efficiency_ratio(pairs["opd"], pairs["ropd"])


def headline_by_seed(by_method: dict[str, list[ArmResult]]) -> dict[int, RatioResult]:
    """The headline ratio computed on each seed's own curves, so its spread over seeds is visible."""
    seeds = sorted({a.seed for arms in by_method.values() for a in arms})
    return {seed: headline({m: [a for a in arms if a.seed == seed] for m, arms in by_method.items()}) for seed in seeds}


# --- the bench -------------------------------------------------------------------------------------


def run_bench(bench: BenchConfig, config_path: str | None = None, finished_only: bool = False) -> dict[str, Any]:
    """Run (or resume) every arm, then write results.json, results.md and curves.png; return the results.

    With `finished_only`, nothing is trained: the results cover the arms that have finished."""
    out = Path(bench.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.yaml").write_text(yaml.safe_dump(bench.model_dump(mode="json"), sort_keys=False))
    started = time.perf_counter()
    eval_prompts = load_prompts(bench.eval.dataset, max_prompts=bench.eval.max_prompts, system_prompt=bench.base.data.system_prompt)
    base = bench.base
    step0 = evaluate_model(base.student.model, base, eval_prompts, bench.eval, out / "step0.json")
    teacher_eval = None
    if bench.evaluate_teacher:
        teacher_eval = evaluate_model(base.teacher.model, base, eval_prompts, bench.eval, out / "teacher_eval.json")
    tokens_per_prompt = prefetch_teacher_answers(bench, bench.seeds[0]) if "ropd" in bench.methods and not finished_only else {}
    arms: list[ArmResult] = []
    for seed in bench.seeds:  # seed-major: a budget cut short leaves every method with the same seeds done
        for method in bench.methods:
            if finished_only and finished_arm(bench, method, seed) is None:
                continue
            arms.append(run_arm(bench, method, seed, eval_prompts, step0, tokens_per_prompt))
            write_results(bench, arms, step0, teacher_eval, time.perf_counter() - started, config_path)
    return write_results(bench, arms, step0, teacher_eval, time.perf_counter() - started, config_path)


def write_results(
    bench: BenchConfig,
    arms: list[ArmResult],
    step0: dict[str, Any],
    teacher_eval: dict[str, Any] | None,
    seconds: float,
    config_path: str | None,
) -> dict[str, Any]:
    out = Path(bench.output_dir)
    by_method = {m: [a for a in arms if a.method == m] for m in bench.methods if any(a.method == m for a in arms)}
    base = bench.base
    results = {
        "config": config_path,
        "student": base.student.model,
        "teacher": base.teacher.model,
        "teacher_description": bench.teacher_description,
        "notes": bench.notes,
        "teacher_card": teacher_card(base),
        "judge": bench.judge or base.teacher.model,
        "train_dataset": base.data.dataset,
        "eval": bench.eval.model_dump(),
        "eval_prompts": step0.get("num_prompts"),
        "budget": {
            "prompts_per_step": base.training.prompts_per_step,
            "num_generations": base.training.num_generations,
            "samples_per_step": bench.samples_per_step,
            "max_steps": base.training.max_steps,
            "updates_per_batch": base.training.updates_per_batch,
            "max_completion_length": base.training.max_completion_length,
            "learning_rate": base.training.learning_rate,
            "teacher_answers_per_prompt": base.teacher.num_answers,
            "eval_every": bench.eval_every,
            "seeds": bench.seeds,
        },
        "step0_accuracy": step0["accuracy"],
        "teacher_accuracy": teacher_eval["accuracy"] if teacher_eval else None,
        "target_accuracy": bench.target_accuracy,
        "price_as": bench.price_as,
        "headline": headline(by_method).model_dump(),
        "headline_by_seed": {str(seed): ratio.model_dump() for seed, ratio in headline_by_seed(by_method).items()},
        "methods": {m: method_summary(bench, m, a) for m, a in by_method.items()},
        "arms": [a.model_dump() for a in arms],
        "seconds": round(seconds, 1),
        "complete": len(arms) == len(bench.methods) * len(bench.seeds),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    plot_curves(by_method, results, out / "curves.png")
    return results


def teacher_card(config: RunConfig) -> dict[str, Any] | None:
    """The teacher_card.json experiments/make_teacher.py leaves next to the teacher's weights, if any."""
    from ropd.models import is_local, resolve_model

    if not is_local(config.teacher.model, config.models):
        return None
    spec = resolve_model(config.teacher.model, config.models)
    card = Path(spec.target).expanduser() / "teacher_card.json"
    return json.loads(card.read_text()) if spec.kind == "hub" and card.is_file() else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ratio_text(ratio: dict[str, Any]) -> str:
    """A headline ratio as "2.50x", or its status when there is no ratio ("not reached", "undefined")."""
    return f"{ratio['ratio']:.2f}x" if ratio["ratio"] is not None else ratio["status"]


def _per_seed_headline(results: dict[str, Any]) -> list[str]:
    """One bullet with each seed's own headline ratio, when there is more than one seed."""
    by_seed = results.get("headline_by_seed") or {}
    if len(by_seed) < 2:
        return []
    parts = [f"seed {seed}: {_ratio_text(r)}" for seed, r in by_seed.items()]
    return ["- Headline per seed (each seed's own curves): " + "; ".join(parts) + "."]


def results_markdown(results: dict[str, Any]) -> str:
    h = results["headline"]
    b = results["budget"]
    lines = [
        "# Sample efficiency: rubric OPD vs logit OPD",
        "",
        "- **Headline** (samples logit OPD needs to reach its final accuracy / samples rubric OPD needs for the same): "
        + f"**{_ratio_text(h)}**"
        + f" — {h['note']}.",
        *_per_seed_headline(results),
        f"- Student `{results['student']}`; teacher `{results['teacher']}` (the same model in every arm: logits for opd/sod, "
        f"answers for ropd); rubricator and judge `{results['judge']}`.",
        f"- Teacher: {results['teacher_description'] or '(not described)'}",
        f"- Held-out accuracy ({results['eval_prompts']} prompts of `{results['eval']['dataset']}`, "
        f"{'greedy' if results['eval']['temperature'] == 0 else 'temperature ' + str(results['eval']['temperature'])}, "
        f"{results['eval']['max_new_tokens']} new tokens): step 0 (floor) {_pct(results['step0_accuracy'])}, "
        f"teacher (ceiling) {_pct(results['teacher_accuracy'])}.",
        f"- Budget: training prompts `{results['train_dataset']}`, {b['prompts_per_step']} prompts x {b['num_generations']} rollouts "
        f"= {b['samples_per_step']} samples per rollout batch, {b.get('updates_per_batch', 1)} optimizer update(s) per batch, "
        f"{b['max_steps']} steps, completions up to {b['max_completion_length']} tokens, "
        f"lr {b['learning_rate']}, {b['teacher_answers_per_prompt']} teacher answers per prompt, eval every {b['eval_every']} samples, "
        f"seeds {b['seeds']}.",
        "",
        "| method | final accuracy, mean [min–max] | best (mean curve) | samples | samples to "
        + (_pct(results["target_accuracy"]) if results["target_accuracy"] is not None else "target")
        + " | teacher tokens | judge tokens | est. cost (USD) | wall time | mean train reward |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["methods"].values():
        reach = s["samples_to_target"]
        reach_text = "–" if results["target_accuracy"] is None else ("not reached" if reach is None else str(reach))
        reward = "–" if s["mean_reward"] is None else f"{s['mean_reward']:.3f}"
        lines.append(
            f"| {s['label']} (`{s['method']}`) | {_pct(s['final_accuracy_mean'])} [{_pct(s['final_accuracy_min'])}–"
            f"{_pct(s['final_accuracy_max'])}] | {_pct(s['best_accuracy_mean'])} | {s['samples']} | {reach_text} | "
            f"{s['teacher_tokens_mean']:,.0f} | {s['judge_tokens_mean']:,.0f} | {s['cost_usd_mean']:.4f} | "
            f"{s['wall_seconds_mean'] / 60:.1f} min | {reward} |"
        )
    lines += [
        "",
        "Teacher tokens: rubric OPD counts the k teacher answers (and their prompt) of every distinct prompt trained on; "
        "logit OPD and SOD count the tokens the teacher scored (prompt plus rollout, one forward pass each, no generation). "
        "Judge tokens: rubricator plus judge. Cost: "
        + (f"every token priced as `{results['price_as']}`." if results["price_as"] else "each model's own price (local models: 0).")
        + " Wall time includes the in-run evaluations and server start-up.",
    ]
    if results["methods"]:
        samples = [int(p["samples"]) for p in next(iter(results["methods"].values()))["curve"]]
        lines += ["", "Held-out accuracy by training samples (mean over seeds):", ""]
        lines += ["| method | " + " | ".join(map(str, samples)) + " |", "|---|" + "---|" * len(samples)]
        for s in results["methods"].values():
            lines.append(f"| {s['method']} | " + " | ".join(_pct(p["mean"]) for p in s["curve"]) + " |")
        if len(results["budget"]["seeds"]) > 1:
            lines += ["", "The same, per seed (the spread behind the means):", ""]
            lines += ["| method | seed | " + " | ".join(map(str, samples)) + " |", "|---|---|" + "---|" * len(samples)]
            for arm in sorted(results["arms"], key=lambda a: (list(results["methods"]).index(a["method"]), a["seed"])):
                by_samples = {p["samples"]: p["accuracy"] for p in arm["curve"]}
                lines.append(f"| {arm['method']} | {arm['seed']} | " + " | ".join(_pct(by_samples.get(x)) for x in samples) + " |")
    if results.get("notes"):
        lines += ["", "Notes: " + results["notes"].strip()]
    if not results["complete"]:
        lines += ["", "**Incomplete**: not every method x seed has finished; rerun the same command to resume."]
    lines.append("")
    return "\n".join(lines)


def plot_curves(by_method: dict[str, list[ArmResult]], results: dict[str, Any], path: Path) -> None:
    """Accuracy vs training samples and vs teacher tokens: mean over seeds, min-max band, floor and ceiling lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, field, xlabel in ((axes[0], "samples", "training samples (student rollouts)"), (axes[1], "teacher_tokens", "teacher tokens")):
        for method, arms in by_method.items():
            rows = mean_curve(arms, field)
            xs, means, lows, highs = zip(*rows, strict=True) if rows else ((), (), (), ())
            line = ax.plot(xs, means, marker="o", label=f"{METHOD_LABELS[method]} ({len(arms)} seed{'s' * (len(arms) > 1)})")[0]
            if len(arms) > 1:
                ax.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        ax.axhline(results["step0_accuracy"], color="grey", linestyle=":", label="step 0 (floor)")
        if results["teacher_accuracy"] is not None:
            ax.axhline(results["teacher_accuracy"], color="black", linestyle="--", label="teacher (ceiling)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['student']} learning from {Path(results['teacher']).name}; judge {results['judge']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
