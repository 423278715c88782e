"""`ropd bench`'s cost model: the teacher and judge tokens an arm spent up to each evaluation, and their price.

Teacher tokens mean different work per method (see `ropd.bench.report.ArmResult.teacher_tokens`): rubric OPD's
are the k teacher answers of every distinct prompt trained on, logit OPD's and SOD's the tokens the teacher scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ropd.bench.config import BenchConfig
from ropd.bench.report import CurvePoint
from ropd.config import RunConfig
from ropd.training.costs import price_for

RUBRIC_ROLES = ("rubricator", "judge")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl; none when the file is absent."""
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
    """The running total reached by `step` (0 before the first logged step)."""
    return max((v for s, v in totals.items() if s <= step), default=0.0)


def ropd_teacher_tokens(batches: int, prompts_per_step: int, tokens_per_prompt: dict[str, int]) -> int:
    """Teacher tokens of the distinct prompts of the first `batches` rollout batches: every epoch covers each prompt once
    (TRL's sampler), so that is min(N, batches * prompts_per_step) prompts, at the mean tokens per prompt."""
    if not tokens_per_prompt:
        return 0
    seen = min(len(tokens_per_prompt), batches * prompts_per_step)
    return round(sum(tokens_per_prompt.values()) * seen / len(tokens_per_prompt))


def arm_cost(
    bench: BenchConfig, config: RunConfig, method: str, last: CurvePoint, usage: dict, tokens_per_prompt: dict[str, int]
) -> float | None:
    """USD for teacher and judge tokens: at `price_as` when set (teacher-scored tokens as input), else each model's own
    price (a local model's is 0); None when a model the arm paid for has no price."""
    prices = config.prices
    if bench.price_as is None:
        teacher_price = price_for(config.teacher, config)
        judge_costs = [usage.get(role, {}).get("cost_usd", 0.0) for role in RUBRIC_ROLES]
        if None in judge_costs or (teacher_price is None and last.teacher_tokens):
            return None
        judge_cost = sum(float(c) for c in judge_costs)
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
