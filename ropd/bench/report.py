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

from ropd.bench.config import METHOD_LABELS, STEP0, BenchConfig
from ropd.bench.stats import bootstrap_mean, paired_difference
from ropd.config import RunConfig


class CurvePoint(BaseModel):
    """Held-out accuracy after `samples` training rollouts."""

    step: int
    samples: int
    accuracy: float
    answered: float
    truncated: float
    mean_completion_tokens: float
    scores: list[float] | None = Field(
        default=None, description="Per held-out prompt, in the eval set's order: the share of its answers that were right."
    )
    teacher_tokens: int = Field(default=0, description="Teacher tokens spent so far (see ArmResult.teacher_tokens).")
    judge_tokens: int = Field(default=0, description="Rubricator plus judge tokens spent so far.")
    eval_seconds: float = 0.0


class ArmResult(BaseModel):
    """One arm x seed: its curve and what it cost."""

    arm: str = Field(default="", description="The arm's name in the bench config (empty in results made before arms existed).")
    method: str
    seed: int
    learning_rate: float | None = None
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
    reward_pairwise_acc: float | None = Field(
        default=None,
        description="Rubric arms: mean over steps of quality/pairwise_acc, the share of (right, wrong) rollout pairs of a group "
        "whose rewards rank the right one strictly higher (right and wrong by the prompt's reference answer).",
    )
    reward_auc: float | None = Field(default=None, description="Rubric arms: mean over steps of quality/auc.")

    @property
    def name(self) -> str:
        """The arm's name: `arm`, or the method for results made before arms existed."""
        return self.arm or self.method


class SweepRun(BaseModel):
    """One run of the learning-rate sweep: an arm at one rate, first seed, evaluated on the validation prompts."""

    arm: str
    learning_rate: float
    result: ArmResult

    @property
    def accuracy(self) -> float:
        return self.result.curve[-1].accuracy


def choose_learning_rates(runs: list[SweepRun], rates: list[float]) -> dict[str, float]:
    """Per arm whose runs at every rate have finished: the rate with the best final validation accuracy, the smaller on a tie."""
    chosen: dict[str, float] = {}
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = {r.learning_rate: r.accuracy for r in runs if r.arm == arm}
        if set(mine) >= set(rates):
            chosen[arm] = max(sorted(rates), key=lambda rate: mine[rate])  # max keeps the first (smallest) of equals
    return chosen


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


def final_scores(arms: list[ArmResult]) -> dict[int, list[float]] | None:
    """Per seed, the per-prompt scores of the arm's last evaluation; None when an arm has none (older results)."""
    rows = {a.seed: a.curve[-1].scores for a in arms}
    return rows if all(r is not None for r in rows.values()) else None  # type: ignore[return-value]


def method_summary(bench: BenchConfig, name: str, arms: list[ArmResult]) -> dict[str, Any]:
    """One arm over its seeds: final accuracy with its 95% interval, best accuracy, samples to the target, tokens,
    cost, time, reward quality, mean curve."""
    finals = [a.curve[-1].accuracy for a in arms]
    curve = mean_curve(arms)
    target = bench.target_accuracy
    rows = final_scores(arms)
    interval = bootstrap_mean(rows, bench.bootstrap_samples) if rows else None
    return {
        "method": name,
        "arm_method": arms[0].method,
        "label": bench.label(name) if name in bench.arms else METHOD_LABELS.get(name, name),
        "learning_rate": arms[0].learning_rate,
        "seeds": [a.seed for a in arms],
        "final_accuracy_mean": statistics.fmean(finals),
        "final_accuracy_low": interval.low if interval else None,
        "final_accuracy_high": interval.high if interval else None,
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
        "mean_reward": _mean_given(a.mean_reward for a in arms),
        "failed_group_rate": _mean_given(a.failed_group_rate for a in arms),
        "reward_pairwise_acc": _mean_given(a.reward_pairwise_acc for a in arms),
        "reward_auc": _mean_given(a.reward_auc for a in arms),
        "curve": [{"samples": x, "mean": m, "min": lo, "max": hi} for x, m, lo, hi in curve],
    }


def _mean_given(values: Any) -> float | None:
    """The mean of the values that are not None; None when all are."""
    given = [v for v in values if v is not None]
    return statistics.fmean(given) if given else None


def paired_differences(bench: BenchConfig, by_arm: dict[str, list[ArmResult]], step0: dict[str, Any]) -> list[dict[str, Any]]:
    """Final-accuracy differences with paired 95% intervals (same prompts, same seeds): every arm minus step 0, and
    every rubric arm minus every arm of another method."""
    finals = {name: final_scores(arms) for name, arms in by_arm.items()}
    pairs: list[tuple[str, str]] = [(name, STEP0) for name in by_arm]
    for name, arms in by_arm.items():
        if arms[0].method == "ropd":
            pairs += [(name, other) for other, group in by_arm.items() if group[0].method != "ropd"]
    baseline = {0: step0["scores"]} if step0.get("scores") else None
    out = []
    for a, b in pairs:
        left, right = finals[a], baseline if b == STEP0 else finals[b]
        if not left or not right:
            continue
        diff = paired_difference(left, right, bench.bootstrap_samples)
        out.append({"a": a, "b": b, **diff.model_dump(), "excludes_zero": diff.excludes_zero})
    return out


def headline(by_method: dict[str, list[ArmResult]], rubric: str = "ropd") -> RatioResult:
    """The headline ratio (arm `opd` vs the rubric arm `rubric`) on the mean curves over seeds; undefined without both."""
    if "opd" not in by_method or rubric not in by_method:
        return RatioResult(
            target_accuracy=None,
            opd_samples=None,
            ropd_samples=None,
            ratio=None,
            status="undefined",
            note=f"needs both opd and {rubric} arms",
        )
    pairs = {m: [(x, mean) for x, mean, _, _ in mean_curve(arms)] for m, arms in by_method.items()}
    return sample_efficiency_ratio(pairs["opd"], pairs[rubric])


def headline_by_seed(by_method: dict[str, list[ArmResult]], rubric: str = "ropd") -> dict[int, RatioResult]:
    """The headline ratio computed on each seed's own curves, so its spread over seeds is visible."""
    seeds = sorted({a.seed for arms in by_method.values() for a in arms})
    return {seed: headline({m: [a for a in arms if a.seed == seed] for m, arms in by_method.items()}, rubric) for seed in seeds}


def rubric_arms(by_arm: dict[str, list[ArmResult]]) -> list[str]:
    """Arms trained on rubric rewards, in order."""
    return [name for name, arms in by_arm.items() if arms[0].method == "ropd"]


# --- the results files -----------------------------------------------------------------------------


def write_results(
    bench: BenchConfig,
    arms: list[ArmResult],
    step0: dict[str, Any],
    teacher_eval: dict[str, Any] | None,
    seconds: float,
    config_path: str | None,
) -> dict[str, Any]:
    """Write results.json, results.md, curves.png and reward_quality.png for the arms finished so far; return the results."""
    out = Path(bench.output_dir)
    by_arm = {name: [a for a in arms if a.name == name] for name in bench.arms if any(a.name == name for a in arms)}
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
        "eval_protocol": bench.eval.protocol(),
        "eval_prompts": step0.get("num_prompts"),
        "budget": {
            "prompts_per_step": base.training.prompts_per_step,
            "num_generations": base.training.num_generations,
            "samples_per_step": bench.samples_per_step,
            "max_steps": base.training.max_steps,
            "updates_per_batch": base.training.updates_per_batch,
            "max_completion_length": base.training.max_completion_length,
            "learning_rate": base.training.learning_rate,
            "learning_rates_swept": bench.learning_rates,
            "teacher_answers_per_prompt": base.teacher.num_answers,
            "eval_every": bench.eval_every,
            "seeds": bench.seeds,
        },
        "step0_accuracy": step0["accuracy"],
        "step0_interval": _step0_interval(bench, step0),
        "teacher_accuracy": teacher_eval["accuracy"] if teacher_eval else None,
        "target_accuracy": bench.target_accuracy,
        "price_as": bench.price_as,
        "headline": headline(by_arm).model_dump(),
        "headline_by_seed": {str(seed): ratio.model_dump() for seed, ratio in headline_by_seed(by_arm).items()},
        "headlines": {name: headline(by_arm, name).model_dump() for name in rubric_arms(by_arm)},
        "methods": {name: method_summary(bench, name, group) for name, group in by_arm.items()},
        "differences": paired_differences(bench, by_arm, step0),
        "arms": [a.model_dump() for a in arms],
        "seconds": round(seconds, 1),
        "complete": len(arms) == len(bench.arms) * len(bench.seeds),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    plot_curves(by_arm, results, out / "curves.png")
    plot_reward_quality(results, out / "reward_quality.png")
    return results


def _step0_interval(bench: BenchConfig, step0: dict[str, Any]) -> dict[str, Any] | None:
    """Step 0's accuracy with its 95% interval over prompts (one model, so no seeds)."""
    if not step0.get("scores"):
        return None
    return bootstrap_mean({0: step0["scores"]}, bench.bootstrap_samples).model_dump()


def write_sweep(bench: BenchConfig, runs: list[SweepRun], step0: dict[str, Any]) -> dict[str, Any]:
    """Write sweep.json and sweep.md: each arm's final validation accuracy at each learning rate, and the rate chosen."""
    out = Path(bench.output_dir)
    chosen = choose_learning_rates(runs, bench.learning_rates)
    assert bench.validation is not None
    table = []
    for run in runs:
        interval = bootstrap_mean({0: run.result.curve[-1].scores}, bench.bootstrap_samples) if run.result.curve[-1].scores else None
        table.append(
            {
                "arm": run.arm,
                "learning_rate": run.learning_rate,
                "accuracy": run.accuracy,
                "low": interval.low if interval else None,
                "high": interval.high if interval else None,
                "mean_reward": run.result.mean_reward,
                "reward_pairwise_acc": run.result.reward_pairwise_acc,
                "wall_seconds": run.result.wall_seconds,
                "chosen": chosen.get(run.arm) == run.learning_rate,
            }
        )
    sweep = {
        "validation": bench.validation.model_dump(),
        "validation_protocol": bench.validation.protocol(),
        "validation_prompts": step0.get("num_prompts"),
        "step0_accuracy": step0["accuracy"],
        "learning_rates": bench.learning_rates,
        "seed": bench.seeds[0],
        "chosen": chosen,
        "runs": table,
        "results": [r.result.model_dump() for r in runs],
    }
    (out / "sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
    (out / "sweep.md").write_text(sweep_markdown(bench, sweep))
    return sweep


def sweep_markdown(bench: BenchConfig, sweep: dict[str, Any]) -> str:
    """sweep.md: final validation accuracy per arm and learning rate, the chosen rate marked."""
    rates = sweep["learning_rates"]
    lines = [
        "# Learning-rate sweep",
        "",
        f"- Validation: {sweep['validation_prompts']} prompts of `{sweep['validation']['dataset']}` ({sweep['validation_protocol']}, "
        f"{sweep['validation']['max_new_tokens']} new tokens), never the held-out set; step 0 {_pct(sweep['step0_accuracy'])}.",
        f"- Each arm trains once per rate with seed {sweep['seed']} and the full budget; the rate with the best final validation "
        "accuracy (ties: the smaller) runs every seed. 1 optimizer update per rollout batch (the published runs' number is not known).",
        "",
        "| arm | " + " | ".join(f"lr {r:g}" for r in rates) + " | chosen |",
        "|---|" + "---|" * (len(rates) + 1),
    ]
    for arm in dict.fromkeys(r["arm"] for r in sweep["runs"]):
        cells = []
        for rate in rates:
            run = next((r for r in sweep["runs"] if r["arm"] == arm and r["learning_rate"] == rate), None)
            cells.append("–" if run is None else f"{_pct(run['accuracy'])} [{_pct(run['low'])}–{_pct(run['high'])}]")
        chosen = sweep["chosen"].get(arm)
        lines.append(
            f"| {bench.label(arm) if arm in bench.arms else arm} | "
            + " | ".join(cells)
            + f" | {'–' if chosen is None else f'{chosen:g}'} |"
        )
    lines += ["", "Intervals: 95% bootstrap over validation prompts (one seed)."]
    return "\n".join(lines) + "\n"


def teacher_card(config: RunConfig) -> dict[str, Any] | None:
    """The teacher_card.json experiments/make_teacher.py leaves next to the teacher's weights, if any."""
    from ropd.endpoints.models import is_local, resolve_model

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


def _interval_text(mean: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    """ "12.5% [9.0%–16.0%]" (points with a sign for differences); the mean alone without an interval."""
    if mean is None:
        return "–"
    if signed:
        text = f"{100 * mean:+.1f}"
        return text + (f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and high is not None else "")
    return _pct(mean) + (f" [{_pct(low)}–{_pct(high)}]" if low is not None and high is not None else "")


def _headline_lines(results: dict[str, Any]) -> list[str]:
    """The headline of the `ropd` arm, per seed, and those of the other rubric arms."""
    h = results["headline"]
    lines = [
        "- **Headline** (samples logit OPD needs to reach its final accuracy / samples rubric OPD needs for the same): "
        + f"**{_ratio_text(h)}**"
        + f" — {h['note']}.",
        *_per_seed_headline(results),
    ]
    for name, other in (results.get("headlines") or {}).items():
        if name != "ropd":
            lines.append(f"- The same for `{name}`: {_ratio_text(other)} — {other['note']}.")
    return lines


def _difference_lines(results: dict[str, Any]) -> list[str]:
    """The paired differences of final accuracy, in points, with their 95% intervals."""
    diffs = results.get("differences") or []
    if not diffs:
        return []
    lines = [
        "",
        "Paired differences of final held-out accuracy (points; 95% bootstrap interval over the same prompts and seeds; "
        "**bold**: the interval excludes 0):",
        "",
        "| difference | mean [95% interval] | seeds | prompts |",
        "|---|---|---|---|",
    ]
    for d in diffs:
        text = _interval_text(d["mean"], d["low"], d["high"], signed=True)
        lines.append(f"| {d['a']} − {d['b']} | {'**' + text + '**' if d['excludes_zero'] else text} | {d['seeds']} | {d['prompts']} |")
    return lines


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: the headline, the setup, the per-arm table with intervals, the paired differences and the curves."""
    b = results["budget"]
    step0 = results.get("step0_interval") or {}
    protocol = results.get("eval_protocol") or (
        "greedy" if results["eval"]["temperature"] == 0 else f"temperature {results['eval']['temperature']}"
    )
    swept = b.get("learning_rates_swept") or []
    lr_text = (
        f"lr chosen per arm on validation prompts from {', '.join(f'{r:g}' for r in swept)} (sweep.md)"
        if swept
        else f"lr {b['learning_rate']}"
    )
    lines = [
        "# Sample efficiency: rubric OPD vs logit OPD",
        "",
        *_headline_lines(results),
        f"- Student `{results['student']}`; teacher `{results['teacher']}` (the same model in every arm: logits for opd/sod, "
        f"answers for the rubric arms); rubricator and judge `{results['judge']}` (oracle arms: none, see below).",
        f"- Teacher: {results['teacher_description'] or '(not described)'}",
        f"- Held-out accuracy ({results['eval_prompts']} prompts of `{results['eval']['dataset']}`, **{protocol}**, "
        f"{results['eval']['max_new_tokens']} new tokens): step 0 (floor) "
        f"{_interval_text(results['step0_accuracy'], step0.get('low'), step0.get('high'))}, "
        f"teacher (ceiling) {_pct(results['teacher_accuracy'])}.",
        f"- Budget: training prompts `{results['train_dataset']}`, {b['prompts_per_step']} prompts x {b['num_generations']} rollouts "
        f"= {b['samples_per_step']} samples per rollout batch, {b.get('updates_per_batch', 1)} optimizer update(s) per batch, "
        f"{b['max_steps']} steps, completions up to {b['max_completion_length']} tokens, "
        f"{lr_text}, {b['teacher_answers_per_prompt']} teacher answers per prompt, eval every {b['eval_every']} samples, "
        f"seeds {b['seeds']}.",
        "",
        "| arm | lr | final accuracy, mean [95% interval] | seed min–max | best (mean curve) | samples | samples to "
        + (_pct(results["target_accuracy"]) if results["target_accuracy"] is not None else "target")
        + " | reward pairwise acc. | teacher tokens | judge tokens | est. cost (USD) | wall time | mean train reward |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["methods"].values():
        reach = s["samples_to_target"]
        reach_text = "–" if results["target_accuracy"] is None else ("not reached" if reach is None else str(reach))
        reward = "–" if s["mean_reward"] is None else f"{s['mean_reward']:.3f}"
        quality = "–" if s.get("reward_pairwise_acc") is None else f"{s['reward_pairwise_acc']:.2f}"
        rate = "–" if s.get("learning_rate") is None else f"{s['learning_rate']:g}"
        cost = "unknown" if s["cost_usd_mean"] is None else f"{s['cost_usd_mean']:.4f}"
        lines.append(
            f"| {s['label']} (`{s['method']}`) | {rate} | "
            f"{_interval_text(s['final_accuracy_mean'], s.get('final_accuracy_low'), s.get('final_accuracy_high'))} | "
            f"{_pct(s['final_accuracy_min'])}–{_pct(s['final_accuracy_max'])} | {_pct(s['best_accuracy_mean'])} | {s['samples']} | "
            f"{reach_text} | {quality} | {s['teacher_tokens_mean']:,.0f} | {s['judge_tokens_mean']:,.0f} | {cost} | "
            f"{s['wall_seconds_mean'] / 60:.1f} min | {reward} |"
        )
    lines += [
        "",
        "Intervals: 95% bootstrap over held-out prompts and seeds. Reward pairwise accuracy (rubric arms): the share of "
        "(right, wrong) rollout pairs of a group whose rewards rank the right one strictly higher, averaged over steps. "
        "Teacher tokens: rubric OPD counts the k teacher answers (and their prompt) of every distinct prompt trained on; "
        "logit OPD and SOD count the tokens the teacher scored (prompt plus rollout, one forward pass each, no generation). "
        "Judge tokens: rubricator plus judge. Cost: "
        + (f"every token priced as `{results['price_as']}`." if results["price_as"] else "each model's own price (local models: 0).")
        + " Wall time includes the in-run evaluations and server start-up.",
    ]
    lines += _difference_lines(results)
    lines += _curve_tables(results)
    if results.get("notes"):
        lines += ["", "Notes: " + results["notes"].strip()]
    if not results["complete"]:
        lines += ["", "**Incomplete**: not every arm x seed has finished; rerun the same command to resume."]
    lines.append("")
    return "\n".join(lines)


def _curve_tables(results: dict[str, Any]) -> list[str]:
    """Held-out accuracy by training samples: the mean over seeds per arm, then each seed."""
    if not results["methods"]:
        return []
    samples = [int(p["samples"]) for p in next(iter(results["methods"].values()))["curve"]]
    lines = ["", "Held-out accuracy by training samples (mean over seeds):", ""]
    lines += ["| arm | " + " | ".join(map(str, samples)) + " |", "|---|" + "---|" * len(samples)]
    for s in results["methods"].values():
        lines.append(f"| {s['method']} | " + " | ".join(_pct(p["mean"]) for p in s["curve"]) + " |")
    if len(results["budget"]["seeds"]) > 1:
        order = list(results["methods"])
        lines += ["", "The same, per seed (the spread behind the means):", ""]
        lines += ["| arm | seed | " + " | ".join(map(str, samples)) + " |", "|---|---|" + "---|" * len(samples)]
        for arm in sorted(results["arms"], key=lambda a: (order.index(a.get("arm") or a["method"]), a["seed"])):
            by_samples = {p["samples"]: p["accuracy"] for p in arm["curve"]}
            lines.append(
                f"| {arm.get('arm') or arm['method']} | {arm['seed']} | " + " | ".join(_pct(by_samples.get(x)) for x in samples) + " |"
            )
    return lines


def plot_curves(by_arm: dict[str, list[ArmResult]], results: dict[str, Any], path: Path) -> None:
    """Accuracy vs training samples and vs teacher tokens: mean over seeds, min-max band, floor and ceiling lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {name: s["label"] for name, s in results["methods"].items()}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, field, xlabel in ((axes[0], "samples", "training samples (student rollouts)"), (axes[1], "teacher_tokens", "teacher tokens")):
        for name, arms in by_arm.items():
            rows = mean_curve(arms, field)
            xs, means, lows, highs = zip(*rows, strict=True) if rows else ((), (), (), ())
            line = ax.plot(xs, means, marker="o", label=f"{labels.get(name, name)} ({len(arms)} seed{'s' * (len(arms) > 1)})")[0]
            if len(arms) > 1:
                ax.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        ax.axhline(results["step0_accuracy"], color="grey", linestyle=":", label="step 0 (floor)")
        if results["teacher_accuracy"] is not None:
            ax.axhline(results["teacher_accuracy"], color="black", linestyle="--", label="teacher (ceiling)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"held-out accuracy ({results.get('eval_protocol', 'greedy')})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['student']} learning from {Path(results['teacher']).name}; judge {results['judge']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reward_quality(results: dict[str, Any], path: Path) -> None:
    """Final held-out accuracy (95% interval) against the reward's pairwise accuracy, one point per rubric arm (oracle
    arms at several noise levels, the real judge's arms), with the other arms' final accuracy as horizontal lines.
    Written only when some rubric arm logged its reward quality."""
    points = [s for s in results["methods"].values() if s.get("reward_pairwise_acc") is not None]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in points:
        low, high = s.get("final_accuracy_low"), s.get("final_accuracy_high")
        err = [[s["final_accuracy_mean"] - low], [high - s["final_accuracy_mean"]]] if low is not None and high is not None else None
        oracle = s["method"].startswith("oracle")
        ax.errorbar(
            s["reward_pairwise_acc"],
            s["final_accuracy_mean"],
            yerr=err,
            fmt="o" if oracle else "s",
            capsize=3,
            color="tab:blue" if oracle else "tab:red",
        )
        ax.annotate(
            s["method"], (s["reward_pairwise_acc"], s["final_accuracy_mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    styles = iter(["--", "-.", ":", (0, (5, 1))])
    for s in results["methods"].values():
        if s.get("reward_pairwise_acc") is None:
            ax.axhline(s["final_accuracy_mean"], linestyle=next(styles, "--"), color="grey", label=f"{s['label']} (final)")
    ax.axhline(results["step0_accuracy"], color="black", linestyle=":", label="step 0")
    ax.set_xlabel("reward pairwise accuracy (right rollout ranked strictly above wrong, mean over steps)")
    ax.set_ylabel("final held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
