"""`ropd bench`'s results files, written in the bench's output_dir by `write_results`:

  results.json   every curve, per-method summaries, costs and the headline ratio
  results.md     the table a reader wants
  curves.png     accuracy vs training samples and vs teacher tokens

and, for a learning-rate sweep, `write_sweep` (sweep.json, sweep.md). The summaries they hold are ropd.bench.report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ropd.bench.config import BenchConfig
from ropd.bench.report import (
    ArmResult,
    SweepRun,
    choose_learning_rates,
    headline,
    headline_by_seed,
    mean_curve,
    method_summary,
    paired_differences,
    rubric_arms,
)
from ropd.bench.stats import bootstrap_mean
from ropd.config import RunConfig


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
            "learning_rates_swept": bench.swept_rates(),
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
    chosen = choose_learning_rates(runs, bench.sweep_plan())
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
        "learning_rates": bench.swept_rates(),
        "learning_rates_by_arm": bench.sweep_plan(),
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
            if run is None and rate not in sweep.get("learning_rates_by_arm", {}).get(arm, rates):
                cells.append("not tried")
                continue
            cells.append("–" if run is None else f"{_pct(run['accuracy'])} [{_pct(run['low'])}–{_pct(run['high'])}]")
        chosen = sweep["chosen"].get(arm)
        lines.append(
            f"| {bench.label(arm) if arm in bench.arms else arm} | "
            + " | ".join(cells)
            + f" | {'–' if chosen is None else f'{chosen:g}'} |"
        )
    lines += ["", "Intervals: 95% bootstrap over validation prompts (one seed). –: not finished; not tried: outside the arm's own sweep."]
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
