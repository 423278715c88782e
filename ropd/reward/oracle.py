"""The oracle reward: an analysis-only upper bound on what a rubric reward can give, with controlled noise.

It is not black-box: it reads each prompt's reference solution, which a user distilling from an API teacher
does not have. `ropd bench` uses it to answer "how good must my judge be for rubric OPD to win at this budget?":
rubric OPD trained on the oracle's rewards with each boolean flipped with probability p, for several p, gives
final accuracy as a function of the reward's measured ranking quality (quality/pairwise_acc, logged per step).

The oracle's rubric for a prompt (`oracle_rubric`):

  final      the answer's final result is the reference answer (the task's own checker)   max_points
  step<i>    the answer states the reference solution's i-th intermediate result           1 each

Intermediate results come from the generator's metadata (`reference_steps`): left-to-right partial results of
an arithmetic `expression` of + and - (reasoning-gym chain_sum, basic_arithmetic), or the results of the
calculations in a GSM8K-style `answer_cot`. Other tasks get the final criterion alone. Every criterion is decided
by code; the reward is sum(points of met criteria) / sum(points), as for any rubric.
"""

from __future__ import annotations

import random
import re
from typing import Any

from ropd.reward.answers import is_correct
from ropd.reward.targets import occurs_in
from ropd.types import Criterion, PromptRow, Rubric

_TERM = re.compile(r"^-?\d+(?:\.\d+)?$")
_COT_RESULT = re.compile(r"=\s*\$?(-?\d[\d,]*(?:\.\d+)?)")


def chain_partials(expression: str) -> list[str]:
    """Left-to-right results of "a + b - c ...": one per operation, the last being the final result.

    Empty for an expression that is not a chain of + and - over plain numbers (its precedence would matter)."""
    tokens = expression.split()
    if len(tokens) < 3 or len(tokens) % 2 == 0 or not all(_TERM.match(t) for t in tokens[::2]):
        return []
    if any(op not in "+-" for op in tokens[1::2]):
        return []
    total, partials = float(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2], strict=True):
        total = total + float(term) if op == "+" else total - float(term)
        partials.append(f"{total:g}" if total != int(total) else str(int(total)))
    return partials


def cot_results(cot: str) -> list[str]:
    """The result of every "... = N" calculation in a worked solution, in order, commas dropped."""
    return [m.replace(",", "") for m in _COT_RESULT.findall(cot)]


def reference_steps(row: PromptRow) -> list[str]:
    """Intermediate results of the row's reference solution (the final result excluded), from its generator metadata."""
    metadata = (row.model_extra or {}).get("metadata")
    if not isinstance(metadata, dict):
        return []
    if isinstance(metadata.get("expression"), str):
        results = chain_partials(metadata["expression"])
    elif isinstance(metadata.get("answer_cot"), str):
        results = cot_results(metadata["answer_cot"])
    else:
        return []
    final = str(row.answer or "").strip()
    steps: list[str] = []
    for value in results:
        if value != final and value not in steps:
            steps.append(value)
    return steps


def oracle_rubric(row: PromptRow, final_points: int = 5) -> Rubric:
    """The oracle's criteria for a prompt with a reference answer: its final result, then each intermediate result."""
    if not row.answer or not str(row.answer).strip():
        raise ValueError(f"prompt '{row.id}': the oracle reward needs a reference answer")
    criteria = [Criterion(id="final", category="final result", text=f"The final result is {row.answer}.", points=final_points)]
    for i, value in enumerate(reference_steps(row), start=1):
        criteria.append(
            Criterion(id=f"step{i}", category="intermediate result", text=f"States the result {value}.", points=1, target=value)
        )
    return Rubric(criteria=criteria)


def oracle_met(row: PromptRow, rubric: Rubric, answer: str) -> list[bool]:
    """Which of the oracle's criteria an answer meets, decided by code (the task's checker, then occurrences)."""
    extra = row.model_extra or {}
    met = []
    for criterion in rubric.criteria:
        if criterion.id == "final":
            met.append(is_correct(answer, row.answer, extra.get("task"), extra.get("metadata")))
        else:
            met.append(occurs_in(str(criterion.target), answer))
    return met


def flip(met: list[list[bool]], noise: float, seed: Any) -> list[list[bool]]:
    """Each boolean flipped with probability `noise`, from a generator seeded by `seed` (the same seed, the same flips)."""
    if noise <= 0:
        return [list(row) for row in met]
    rng = random.Random(f"oracle-noise:{seed}")
    return [[(not b) if rng.random() < noise else b for b in row] for row in met]
