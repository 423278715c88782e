"""`ropd bench`'s results: the result types, the curves summarised over seeds, the headline ratio, and the files.

`write_results` writes, in the bench's output_dir:

  results.json   every curve, per-method summaries, costs and the headline ratio
  results.md     the table a reader wants
  curves.png     accuracy vs training samples and vs teacher tokens

Headline: samples logit OPD needs to reach its own final accuracy / samples rubric OPD needs to
reach that same accuracy (mean curves over seeds).
"""

from __future__ import annotations

import statistics
from typing import Any, Literal

from pydantic import BaseModel, Field

from ropd.bench.config import METHOD_LABELS, STEP0, BenchConfig
from ropd.bench.stats import bootstrap_mean, paired_difference


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


def choose_learning_rates(runs: list[SweepRun], rates: dict[str, list[float]]) -> dict[str, float]:
    """Per arm whose runs at every one of its `rates` have finished: the rate with the best final validation accuracy,
    the smaller on a tie."""
    chosen: dict[str, float] = {}
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = {r.learning_rate: r.accuracy for r in runs if r.arm == arm and r.learning_rate in rates.get(arm, [])}
        if mine and set(mine) >= set(rates[arm]):
            chosen[arm] = max(sorted(rates[arm]), key=lambda rate: mine[rate])  # max keeps the first (smallest) of equals
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
    baseline = step0.get("scores") or None  # one row: pairs with whichever seeds the other arm has
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
