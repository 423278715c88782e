"""`ropd bench`: how many student samples each method needs, on one budget axis, from one teacher.

For every method x seed the bench trains the same student on the same prompts (same order, same
rollouts per prompt, same optimizer settings) and measures held-out accuracy on the in-memory
model every `eval_every` training samples (rollouts consumed), with the same greedy decoding at
every checkpoint. Step 0 (the floor) and the teacher (the ceiling) are measured once with those
settings. A finished arm is read back on a rerun, never trained again; an unfinished one starts over.

This module is the runner. The bench is split along its seams:

  ropd.bench_config   BenchConfig (the YAML), EvalSettings, one arm's run config
  ropd.bench_costs    teacher and judge tokens per evaluation, and their estimated cost
  ropd.bench_report   result types, summaries over seeds, the headline, results.json/.md and curves.png

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

from ropd.bench_config import METHOD_LABELS, BenchConfig, EvalSettings, arm_config, arm_dir, fingerprint, load_bench_config
from ropd.bench_costs import RUBRIC_ROLES, arm_cost, cumulative_by_step, read_metrics, ropd_teacher_tokens, total_at
from ropd.bench_report import (
    ArmResult,
    CurvePoint,
    RatioResult,
    headline,
    headline_by_seed,
    mean_curve,
    sample_efficiency_ratio,
    samples_to_reach,
    write_results,
)
from ropd.config import ConfigError, RunConfig
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
    drop_checkpoints(out)
    return result


def drop_checkpoints(arm_dir: Path) -> None:
    """Delete a finished arm's trainer checkpoints (weights plus optimizer state, about 12x the weights with AdamW):
    an unfinished arm starts over rather than resuming, so only the final model is kept."""
    for checkpoint in arm_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


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
