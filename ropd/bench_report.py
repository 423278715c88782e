"""`ropd bench`'s results: the result types, the curves summarised over seeds, the headline ratio, and the files.

`write_results` writes, in the bench's output_dir:

  results.json   every curve, per-method summaries, costs and the headline ratio
  results.md     the table a reader wants
  curves.png     accuracy vs training samples and vs teacher tokens

Headline: samples logit OPD needs to reach its own final accuracy / samples rubric OPD needs to
reach that same accuracy (mean curves over seeds).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ropd.bench_config import METHOD_LABELS, BenchConfig
from ropd.config import RunConfig


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
    cost_usd: float | None = Field(description="USD of the arm's API tokens; None when a model it paid for has no price.")
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
    """One method over its seeds: final and best accuracy, samples to the target, tokens, cost, time, mean curve."""
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
        "cost_usd_mean": None if any(a.cost_usd is None for a in arms) else statistics.fmean(a.cost_usd or 0.0 for a in arms),
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
    """The headline ratio on the mean curves over seeds; undefined without both an opd and a ropd arm."""
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


# --- the results files -----------------------------------------------------------------------------


def write_results(
    bench: BenchConfig,
    arms: list[ArmResult],
    step0: dict[str, Any],
    teacher_eval: dict[str, Any] | None,
    seconds: float,
    config_path: str | None,
) -> dict[str, Any]:
    """Write results.json, results.md and curves.png for the arms finished so far; return the results."""
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
    """A share as a percentage with one decimal, a dash when missing."""
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
    """results.md: the headline, the setup, the per-method table and the curves by samples (mean and per seed)."""
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
        cost = "unknown" if s["cost_usd_mean"] is None else f"{s['cost_usd_mean']:.4f}"
        lines.append(
            f"| {s['label']} (`{s['method']}`) | {_pct(s['final_accuracy_mean'])} [{_pct(s['final_accuracy_min'])}–"
            f"{_pct(s['final_accuracy_max'])}] | {_pct(s['best_accuracy_mean'])} | {s['samples']} | {reach_text} | "
            f"{s['teacher_tokens_mean']:,.0f} | {s['judge_tokens_mean']:,.0f} | {cost} | "
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
