"""`ropd bench`: how many student samples each method needs, on one budget axis, from one teacher.

An arm is a method plus settings laid over the base run (`arms:` in the YAML). With `learning_rates`, each arm
first trains once per rate on the first seed and the full budget, evaluated on the validation prompts; the rate
with the best final validation accuracy is then the arm's (sweep.json, sweep.md). Then for every arm x seed the
bench trains the same student on the same prompts (same order, same rollouts per prompt) and measures held-out
accuracy, per prompt, on the in-memory model every `eval_every` training samples (rollouts consumed), with the
same decoding at every checkpoint. Step 0 (the floor) and the teacher (the ceiling) are measured once with those
settings. A finished arm is read back on a rerun, never trained again, from its folder or from the record copied
into steps/ (committed with the results, so a fresh clone resumes too); an unfinished one starts over.

This module is the runner. The bench is split along its seams:

  ropd.bench.config   BenchConfig (the YAML), EvalSettings, one arm's run config
  ropd.bench.costs    teacher and judge tokens per evaluation, and their estimated cost
  ropd.bench.report   result types, summaries over seeds, the headline, results.json/.md and curves.png

The names other code uses from those modules are re-exported here.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from transformers import TrainerCallback

from ropd.bench.config import METHOD_LABELS, BenchConfig, EvalSettings, arm_config, arm_dir, fingerprint, load_bench_config
from ropd.bench.costs import RUBRIC_ROLES, arm_cost, cumulative_by_step, read_metrics, ropd_teacher_tokens, total_at
from ropd.bench.report import (
    ArmResult,
    CurvePoint,
    RatioResult,
    SweepRun,
    choose_learning_rates,
    headline,
    headline_by_seed,
    mean_curve,
    sample_efficiency_ratio,
    samples_to_reach,
)
from ropd.bench.results import write_results, write_sweep
from ropd.config import ORACLE, ConfigError, RunConfig
from ropd.data import load_prompts
from ropd.types import PromptRow

__all__ = [
    "METHOD_LABELS",
    "ArmResult",
    "BenchConfig",
    "CurvePoint",
    "EvalSettings",
    "HeldOutEval",
    "RatioResult",
    "arm_config",
    "arm_dir",
    "evaluate_model",
    "evaluate_point",
    "headline",
    "headline_by_seed",
    "load_bench_config",
    "mean_curve",
    "ropd_teacher_tokens",
    "run_bench",
    "sample_efficiency_ratio",
    "samples_to_reach",
]

console = Console(stderr=True)


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
    """Held-out accuracy of the in-memory model with the bench's decoding settings, as one curve point."""
    from ropd.evaluation.eval import evaluate

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
        scores=[r.correct / r.samples for r in result.records],
        answered=result.answered,
        truncated=result.truncated,
        mean_completion_tokens=result.mean_completion_tokens,
        eval_seconds=result.seconds,
    )


def evaluate_model(name: str, config: RunConfig, prompts: list[PromptRow], settings: EvalSettings, path: Path) -> dict[str, Any]:
    """Held-out accuracy of a model loaded by name (step 0, the teacher), cached in `path` (JSON)."""
    from ropd.endpoints.models import load_model, load_tokenizer

    key = fingerprint({"model": name, "models": config.models, "dtype": config.student.dtype, "eval": settings.model_dump()})
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == key:
            return {"num_prompts": len(prompts), **saved}
    console.print(f"evaluating {name} on {len(prompts)} prompts ({path.name}) ...")
    model = load_model(name, config.student.dtype, config.models)
    point = evaluate_point(model, load_tokenizer(name, config.models), prompts, settings, 0, 0)
    saved = {"fingerprint": key, "model": name, "num_prompts": len(prompts), **point.model_dump()}
    path.write_text(json.dumps(saved, indent=2) + "\n")
    return saved


# --- one arm ---------------------------------------------------------------------------------------


def arm_fingerprint(bench: BenchConfig, config: RunConfig, sweep: bool = False) -> str:
    """What makes an arm's result: its run config, the evaluation settings and how often (in optimizer steps) it is
    evaluated: a sweep run once at the end on the validation prompts, an arm every eval_every samples on the held-out."""
    settings = bench.validation if sweep and bench.validation is not None else bench.eval
    every = config.training.max_steps if sweep else bench.eval_every_steps
    # settings left at their defaults are not part of it, so a field that a later version adds (at a default that keeps
    # the old behaviour) leaves finished arms valid
    run = config.model_dump(mode="json", exclude_defaults=True)
    return fingerprint({"run": run, "eval": settings.model_dump(exclude_defaults=True), "every": every})


def record_name(name: str, seed: int, learning_rate: float | None, sweep: bool) -> str:
    """The prefix of an arm's files in steps/: <arm>-seed<seed>, or sweep-<arm>-lr<rate>."""
    return f"sweep-{name}-lr{learning_rate:g}" if sweep else f"{name}-seed{seed}"


def finished_arm(out: Path, config: RunConfig, key: str, record: str) -> ArmResult | None:
    """The arm's saved result when it finished with these settings (its folder's arm.json, else the copy in steps/);
    None when it has not finished. A result made with other settings is an error: it would be overwritten."""
    for done in (Path(config.output.dir) / "arm.json", out / "steps" / f"{record}-arm.json"):
        if done.is_file():
            saved = ArmResult.model_validate_json(done.read_text())
            if saved.fingerprint != key:
                raise ConfigError(f"{done} was made with other settings than this bench config; choose another output_dir or remove it")
            return saved
    return None


def read_back(bench: BenchConfig, name: str, seed: int, learning_rate: float | None, sweep: bool = False) -> ArmResult | None:
    """A finished arm's result, trained nothing; None when it has not finished."""
    config = arm_config(bench, name, seed, learning_rate, sweep)
    return finished_arm(
        Path(bench.output_dir), config, arm_fingerprint(bench, config, sweep), record_name(name, seed, learning_rate, sweep)
    )


def run_arm(
    bench: BenchConfig,
    name: str,
    seed: int,
    eval_prompts: list[PromptRow],
    step0: dict[str, Any],
    tokens_per_prompt: dict[str, int],
    learning_rate: float | None = None,
    sweep: bool = False,
) -> ArmResult:
    """Train one arm with in-run evaluation, or read it back when a finished one with the same settings exists.

    A sweep run is evaluated on the validation prompts once, at the end of its budget."""
    from ropd.endpoints.models import load_tokenizer
    from ropd.training.run import train

    config = arm_config(bench, name, seed, learning_rate, sweep)
    settings = bench.validation if sweep and bench.validation is not None else bench.eval
    every_steps = config.training.max_steps if sweep else bench.eval_every_steps
    key = arm_fingerprint(bench, config, sweep)
    out, record = Path(config.output.dir), record_name(name, seed, learning_rate, sweep)
    steps_dir = Path(bench.output_dir) / "steps"
    saved = finished_arm(Path(bench.output_dir), config, key, record)
    if saved is not None:
        console.print(f"{record}: finished earlier, read back")
        keep_step_records(out, steps_dir, record)
        return saved
    if out.exists():
        console.print(f"{record}: unfinished arm in {out}, starting it over")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer = load_tokenizer(config.student.model, config.models)
    sink, updates = out / "curve.jsonl", config.training.updates_per_batch
    callback = HeldOutEval(eval_prompts, settings, tokenizer, every_steps, bench.samples_per_step, sink, updates)
    started = time.perf_counter()
    console.rule(f"{bench.label(name)} ({record}), lr {config.training.learning_rate:g}")
    train(config, callbacks=[callback])
    wall = time.perf_counter() - started
    result = summarise_arm(bench, config, name, seed, key, callback, step0, tokens_per_prompt, wall)
    (out / "arm.json").write_text(result.model_dump_json(indent=2) + "\n")
    keep_step_records(out, steps_dir, record)
    drop_checkpoints(out)
    return result


def drop_checkpoints(arm_dir: Path) -> None:
    """Delete a finished arm's trainer checkpoints (weights plus optimizer state, about 12x the weights with AdamW):
    an unfinished arm starts over rather than resuming, so only the final model is kept."""
    for checkpoint in arm_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def keep_step_records(arm_dir: Path, steps_dir: Path, name: str) -> None:
    """Copy an arm's result, per-step metrics, held-out curve, usage and rubric groups out of its folder (which holds
    weights and is not committed) into `steps/`, so the figures a report cites keep their evidence and a fresh clone
    reads the finished arm back."""
    steps_dir.mkdir(parents=True, exist_ok=True)
    for source in ("arm.json", "metrics.jsonl", "curve.jsonl", "usage.json", "groups.jsonl"):
        if (arm_dir / source).is_file():
            shutil.copyfile(arm_dir / source, steps_dir / f"{name}-{source}")


def is_oracle_arm(config: RunConfig) -> bool:
    """An arm whose rubric reward comes from the oracle (no teacher answers, no judge calls)."""
    return config.judge.model == ORACLE


def summarise_arm(
    bench: BenchConfig,
    config: RunConfig,
    name: str,
    seed: int,
    key: str,
    callback: HeldOutEval,
    step0: dict[str, Any],
    tokens_per_prompt: dict[str, int],
    wall: float,
) -> ArmResult:
    """Join the eval points with the costs logged in metrics.jsonl and usage.json."""
    out = Path(config.output.dir)
    method = config.method.name
    metrics = read_metrics(out / "metrics.jsonl")
    judge_totals = cumulative_by_step(metrics, tuple(f"{role}/tokens" for role in RUBRIC_ROLES))
    start = CurvePoint(**{k: v for k, v in step0.items() if k in CurvePoint.model_fields})
    start = start.model_copy(update={"eval_seconds": 0.0})
    points = [start]
    for point in callback.points:
        if method == "ropd" and not is_oracle_arm(config):
            batches = -(-point.step // config.training.updates_per_batch)
            teacher = ropd_teacher_tokens(batches, config.training.prompts_per_step, tokens_per_prompt)
        elif method in ("opd", "sod"):
            teacher = callback.teacher_tokens_seen.get(point.step, 0)
        else:
            teacher = 0
        points.append(point.model_copy(update={"teacher_tokens": teacher, "judge_tokens": round(total_at(judge_totals, point.step))}))
    last = points[-1]
    usage = json.loads((out / "usage.json").read_text()) if (out / "usage.json").is_file() else {}
    return ArmResult(
        arm=name,
        method=method,
        seed=seed,
        learning_rate=config.training.learning_rate,
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
        failed_group_rate=_mean_of(metrics, "rubric/group_failure_rate"),
        mean_reward=_mean_of(metrics, "reward"),
        reward_pairwise_acc=_mean_of(metrics, "quality/pairwise_acc"),
        reward_auc=_mean_of(metrics, "quality/auc"),
    )


def _mean_of(metrics: list[dict[str, Any]], name: str) -> float | None:
    """The mean of one logged metric over the steps that logged it; None when none did."""
    values = [m[name] for m in metrics if isinstance(m.get(name), (int, float))]
    return statistics.fmean(values) if values else None


# --- teacher answers (rubric arms) -----------------------------------------------------------------


def teacher_answer_arm(bench: BenchConfig) -> str | None:
    """The first arm that reads teacher answers (a rubric arm that is not an oracle arm), if any."""
    for name in bench.arms:
        config = arm_config(bench, name, bench.seeds[0])
        if config.method.name == "ropd" and not is_oracle_arm(config):
            return name
    return None


def prefetch_teacher_answers(bench: BenchConfig, name: str, seed: int) -> dict[str, int]:
    """Fetch the rubric arms' k teacher answers once into the shared cache; return teacher tokens per prompt.

    Tokens are counted with the teacher's tokenizer when it has local weights (the student's otherwise): the
    prompt once per request plus every answer, so the count does not depend on what the cache already held.
    """
    from ropd.endpoints.models import is_local, load_tokenizer
    from ropd.evaluation.eval import render_prompt
    from ropd.reward.teacher import teach

    config = arm_config(bench, name, seed)
    summary = teach(config, progress=True)
    if "error" in summary:
        raise RuntimeError(f"teacher answers for the rubric arms could not be fetched: {summary['error']}")
    from ropd.endpoints.cache import ResultCache
    from ropd.reward.teacher import open_teacher_pool

    model = config.teacher.model if is_local(config.teacher.model, config.models) else config.student.model
    tokenizer = load_tokenizer(model, config.models)
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


# --- the bench -------------------------------------------------------------------------------------


def run_sweep(bench: BenchConfig, train: list[str], tokens_per_prompt: dict[str, int]) -> dict[str, float]:
    """Train each swept arm in `train` once per learning rate (first seed, full budget), evaluated on the validation
    prompts, and read back the finished runs of the others; write sweep.json and sweep.md; return the chosen rate of
    every arm whose runs have all finished."""
    plan = bench.sweep_plan()
    if not plan or bench.validation is None:
        return {}
    out = Path(bench.output_dir)
    prompts = load_prompts(bench.validation.dataset, max_prompts=bench.validation.max_prompts, system_prompt=bench.base.data.system_prompt)
    step0 = evaluate_model(bench.base.student.model, bench.base, prompts, bench.validation, out / "step0_validation.json")
    runs: list[SweepRun] = []
    for name, rates in plan.items():
        for rate in rates:
            if name in train:
                result = run_arm(bench, name, bench.seeds[0], prompts, step0, tokens_per_prompt, rate, sweep=True)
            else:
                result = read_back(bench, name, bench.seeds[0], rate, sweep=True)
                if result is None:
                    continue
            runs.append(SweepRun(arm=name, learning_rate=rate, result=result))
            write_sweep(bench, runs, step0)
    write_sweep(bench, runs, step0)
    return choose_learning_rates(runs, plan)


def run_bench(
    bench: BenchConfig,
    config_path: str | None = None,
    finished_only: bool = False,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep and every arm, then write results.json, results.md and the plots; return the results.

    `only` restricts training to these arms now and `seeds` to these of the config's seeds (a later full run reads
    them back; the sweep stays on the config's first seed). With `finished_only`, nothing is trained: the results cover
    the sweep runs and arms that have finished."""
    unknown = sorted(set(only or []) - set(bench.arms))
    if unknown:
        raise ConfigError(f"no arm named {', '.join(unknown)} (arms: {', '.join(bench.arms)})")
    strangers = [s for s in seeds or [] if s not in bench.seeds]
    if strangers:
        listed = ", ".join(map(str, bench.seeds))
        raise ConfigError(f"seed {', '.join(map(str, strangers))} is not among the config's seeds ({listed}); add it to `seeds:` first")
    out = Path(bench.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.yaml").write_text(yaml.safe_dump(bench.model_dump(mode="json"), sort_keys=False))
    selected = [name for name in bench.arms if not only or name in only]
    started = time.perf_counter()
    base = bench.base
    teacher_arm = teacher_answer_arm(bench)
    wanted = (
        teacher_arm is not None and not finished_only and any(arm_config(bench, n, bench.seeds[0]).method.name == "ropd" for n in selected)
    )
    tokens_per_prompt = prefetch_teacher_answers(bench, teacher_arm, bench.seeds[0]) if wanted and teacher_arm else {}
    chosen = run_sweep(bench, [] if finished_only else selected, tokens_per_prompt)
    eval_prompts = load_prompts(bench.eval.dataset, max_prompts=bench.eval.max_prompts, system_prompt=base.data.system_prompt)
    step0 = evaluate_model(base.student.model, base, eval_prompts, bench.eval, out / "step0.json")
    teacher_eval = None
    if bench.evaluate_teacher:
        teacher_eval = evaluate_model(base.teacher.model, base, eval_prompts, bench.eval, out / "teacher_eval.json")
    arms: list[ArmResult] = []
    for seed in bench.seeds:  # seed-major: a budget cut short leaves every arm with the same seeds done
        for name in bench.arms:
            source = bench.arms[name].learning_rate_from or name  # whose sweep chooses this arm's rate
            if bench.arm_rates(source) and source not in chosen:
                continue  # that sweep has not finished
            rate = chosen.get(source)  # None: no sweep covers it, the base rate
            if finished_only or name not in selected or (seeds and seed not in seeds):
                result = read_back(bench, name, seed, rate)
                if result is None:
                    continue
            else:
                result = run_arm(bench, name, seed, eval_prompts, step0, tokens_per_prompt, rate)
            arms.append(result)
            write_results(bench, arms, step0, teacher_eval, time.perf_counter() - started, config_path)
    return write_results(bench, arms, step0, teacher_eval, time.perf_counter() - started, config_path)
