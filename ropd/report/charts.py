"""The charts of `ropd inspect`'s pages, drawn as inline SVG (no JavaScript library, no image files).

`line_chart` (lines with optional min-max bands) and `stacked_bars` draw; `run_charts` and `bench_charts`
choose what a run page and a bench page show. Every label is escaped: model and config text never becomes markup.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

TIME_PARTS = ("time/sample", "time/reward", "time/teacher_logits", "time/update")
PALETTE = ("#1f6fb4", "#d1452c", "#2e9a47", "#8a58b8", "#e08a12", "#7a5a48", "#1aa3b3", "#777777")
METHOD_LABELS = {"ropd": "rubric OPD", "opd": "logit OPD", "sod": "SOD", "grpo": "outcome GRPO"}  # as ropd.bench.config's


@dataclass
class Series:
    """One line of a chart: (x, y) points, an optional (x, low, high) band, a dashed style for reference lines."""

    name: str
    points: list[tuple[float, float]]
    band: list[tuple[float, float, float]] = field(default_factory=list)
    dashed: bool = False
    color: str | None = None


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_text(value: float) -> str:
    """A tick label: short, with thousands as "k" from 10,000 up."""
    if value == 0:
        return "0"
    if abs(value) >= 10000:
        return f"{value / 1000:g}k"
    return f"{value:.4g}"


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    width: int = 560,
    height: int = 260,
) -> Markup:
    """An SVG line chart (with bands) and an HTML legend; every label is escaped."""
    drawn = [s for s in series if s.points or s.band]
    if not drawn:
        return Markup('<figure class="chart empty"><figcaption>{}: nothing logged</figcaption></figure>').format(title)
    xs = [x for s in drawn for x, _ in s.points] + [x for s in drawn for x, _, _ in s.band]
    ys = [y for s in drawn for _, y in s.points] + [v for s in drawn for _, lo, hi in s.band for v in (lo, hi)]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = y_range if y_range is not None else (min(ys), max(ys))
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if y_range is None:
        pad = (y1 - y0) * 0.06
        y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 58, 12, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    esc = html.escape
    parts = [
        f'<svg class="chart-svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
        f'<text class="chart-title" x="{left}" y="16">{esc(title)}</text>',
    ]
    for tick in nice_ticks(y0, y1):
        y = py(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(_tick_text(tick))}</text>')
    whole = all(float(x).is_integer() for x in xs)  # steps, samples: no fractional ticks
    for tick in nice_ticks(x0, x1, 6):
        if whole and not float(tick).is_integer():
            continue
        x = px(tick)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{esc(_tick_text(tick))}</text>')
    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    parts.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{esc(x_label)}</text>')
    if y_label:
        parts.append(
            f'<text class="axis" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">{esc(y_label)}</text>'
        )
    legend = []
    for index, s in enumerate(drawn):
        color = s.color or PALETTE[index % len(PALETTE)]
        if len(s.band) > 1:
            upper = " ".join(f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in s.band)
            lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(s.band))
            parts.append(f'<polygon class="band" points="{upper} {lower}" fill="{color}"/>')
        if s.points:
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
            parts.append(f'<polyline class="line" points="{coords}" stroke="{color}"{dash}/>')
            if len(s.points) <= 80 and not s.dashed:
                for x, y in s.points:
                    parts.append(
                        f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.6" fill="{color}"><title>{esc(s.name)}: '
                        f"{esc(_tick_text(x))} → {y:.4g}</title></circle>"
                    )
        legend.append(f'<span class="key"><i style="background:{color}"></i>{esc(s.name)}</span>')
    parts.append("</svg>")
    return Markup(f'<figure class="chart">{"".join(parts)}<figcaption>{"".join(legend)}</figcaption></figure>')


def stacked_bars(steps: Sequence[int], parts: dict[str, Sequence[float]], title: str, width: int = 560, height: int = 260) -> Markup:
    """An SVG stacked bar per step (e.g. seconds per phase) with an HTML legend."""
    totals = [sum(values[i] for values in parts.values()) for i in range(len(steps))]
    if not steps or not any(totals):
        return Markup('<figure class="chart empty"><figcaption>{}: nothing logged</figcaption></figure>').format(title)
    left, right, top, bottom = 58, 12, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    high = max(totals) * 1.05
    slot = plot_w / len(steps)
    esc = html.escape
    out = [
        f'<svg class="chart-svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
        f'<text class="chart-title" x="{left}" y="16">{esc(title)}</text>',
    ]
    for tick in nice_ticks(0, high):
        y = top + (1 - tick / high) * plot_h
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(_tick_text(tick))}</text>')
    label_every = max(1, math.ceil(len(steps) / 12))
    for i, step in enumerate(steps):
        base = top + plot_h
        x = left + i * slot + slot * 0.1
        for j, (name, values) in enumerate(parts.items()):
            value = values[i]
            if value <= 0:
                continue
            h = value / high * plot_h
            base -= h
            out.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{max(slot * 0.8, 0.5):.1f}" height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>step {step}: {esc(name)} {value:.2f} s</title></rect>"
            )
        if i % label_every == 0:
            out.append(f'<text class="tick" x="{x + slot * 0.4:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{step}</text>')
    out.append(f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    out.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">step</text>')
    out.append(f'<text class="axis" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">seconds</text>')
    out.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{PALETTE[j % len(PALETTE)]}"></i>{esc(n)}</span>' for j, n in enumerate(parts)
    )
    return Markup(f'<figure class="chart">{"".join(out)}<figcaption>{legend}</figcaption></figure>')


def _points(steps: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(s["step"], float(s[key])) for s in steps if isinstance(s.get(key), (int, float)) and math.isfinite(s[key])]


def run_charts(steps: list[dict[str, Any]], held_out: Sequence[dict[str, Any]] = ()) -> list[Markup]:
    """The run page's curves from metrics.jsonl: reward, reward quality, group health, loss, step times; and the held-out
    accuracy a bench arm measured during the run (curve.jsonl), when there is one."""
    reward = _points(steps, "reward")
    std = {s["step"]: s.get("reward_std") for s in steps}
    band = [(x, y - std[x], y + std[x]) for x, y in reward if isinstance(std.get(x), (int, float))]
    charts = [
        line_chart([Series("reward mean (band: ± std)", reward, band)], "Reward per step", "step", "reward"),
        line_chart(
            [
                Series("pairwise accuracy", _points(steps, "quality/pairwise_acc")),
                Series("ROC-AUC", _points(steps, "quality/auc")),
                Series("rollouts correct", _points(steps, "quality/student_correct_rate")),
                Series("teacher answers correct", _points(steps, "quality/teacher_correct_rate")),
            ],
            "Reward quality (needs reference answers)",
            "step",
            "rate",
            y_range=(0.0, 1.0),
        ),
        line_chart(
            [
                Series("groups without spread", _points(steps, "train/zero_variance_group_rate")),
                Series("failed groups", _points(steps, "rubric/group_failure_rate")),
                Series("update skipped (no signal)", _points(steps, "train/skipped_update")),
            ],
            "Groups without learning signal",
            "step",
            "share",
            y_range=(0.0, 1.0),
        ),
        line_chart([Series("loss", _points(steps, "loss")), Series("grad norm", _points(steps, "grad_norm"))], "Loss", "step"),
    ]
    timed = [s for s in steps if any(k in s for k in TIME_PARTS)]
    parts = {key.removeprefix("time/"): [float(s.get(key) or 0.0) for s in timed] for key in TIME_PARTS if any(key in s for s in timed)}
    charts.append(stacked_bars([s["step"] for s in timed], parts, "Step time by phase"))
    if held_out:
        accuracy = [(p["step"], p["accuracy"]) for p in held_out if isinstance(p.get("step"), int) and isinstance(p.get("accuracy"), float)]
        charts.append(line_chart([Series("held-out accuracy", accuracy)], "Held-out accuracy (bench evaluation)", "step", "accuracy"))
    return charts


def _arm_curves(arms: list[dict[str, Any]], field_name: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per arm: (x, mean, min, max) held-out accuracy over seeds at each point all its seeds share."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        by_method.setdefault(arm.get("arm") or arm["method"], []).append(arm)
    curves = {}
    for method, group in by_method.items():
        shared = sorted(set.intersection(*({p["samples"] for p in a["curve"]} for a in group)))
        rows = []
        for samples in shared:
            points = [next(p for p in a["curve"] if p["samples"] == samples) for a in group]
            accuracies = [p["accuracy"] for p in points]
            x = samples if field_name == "samples" else statistics.fmean(p.get(field_name, 0) for p in points)
            rows.append((x, statistics.fmean(accuracies), min(accuracies), max(accuracies)))
        curves[method] = rows
    return curves


def bench_charts(results: dict[str, Any]) -> list[Markup]:
    """Held-out accuracy vs training samples and vs teacher tokens: mean over seeds with a min-max band."""
    charts = []
    for field_name, x_label in (("samples", "training samples (student rollouts)"), ("teacher_tokens", "teacher tokens")):
        series = []
        curves = _arm_curves(results.get("arms") or [], field_name)
        for index, (method, rows) in enumerate(curves.items()):
            seeds = sum((a.get("arm") or a["method"]) == method for a in results["arms"])
            series.append(
                Series(
                    f"{METHOD_LABELS.get(method, method)} ({seeds} seed{'s' * (seeds > 1)})",
                    [(x, m) for x, m, _, _ in rows],
                    [(x, lo, hi) for x, _, lo, hi in rows] if seeds > 1 else [],
                    color=PALETTE[index % len(PALETTE)],
                )
            )
        xs = [x for s in series for x, _ in s.points]
        if xs:
            for name, key, color in (("step 0 (floor)", "step0_accuracy", "#999999"), ("teacher (ceiling)", "teacher_accuracy", "#222222")):
                if results.get(key) is not None:
                    series.append(Series(name, [(min(xs), results[key]), (max(xs), results[key])], dashed=True, color=color))
        top = max([y for s in series for _, y in s.points] + [hi for s in series for _, _, hi in s.band], default=1.0)
        y_range = (0.0, min(1.0, round(top * 1.1 + 0.05, 1)))
        charts.append(line_chart(series, f"Held-out accuracy vs {x_label}", x_label, "accuracy", y_range=y_range))
    return charts
