"""Uncertainty for `ropd bench`: 95% intervals over held-out prompts and seeds, and paired differences between arms.

An arm's accuracy is a matrix: one row per training seed, one column per held-out prompt (the share of that
prompt's answers that were right). The bootstrap redraws seeds and prompts with replacement, together, and
takes the percentile interval of the mean. A difference between two arms is paired: both are redrawn on the
same seeds and the same prompts, so prompt difficulty, which both arms share, cancels out. Step 0 (the untrained
student) has one row, which every seed of the other arm is compared with.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

CONFIDENCE = 0.95


class Interval(BaseModel):
    """A mean with its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    seeds: int = Field(description="Seeds (rows) behind the mean.")
    prompts: int = Field(description="Held-out prompts (columns) behind the mean.")

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (for a difference: a difference the data can tell)."""
        return self.low > 0 or self.high < 0


def _matrix(rows: dict[int, list[float]]) -> tuple[list[int], np.ndarray]:
    seeds = sorted(rows)
    widths = {len(rows[s]) for s in seeds}
    if len(widths) != 1:
        raise ValueError(f"per-prompt scores of unequal length across seeds: {sorted(widths)}")
    return seeds, np.asarray([rows[s] for s in seeds], dtype=float)


def _interval(values: np.ndarray, mean: float, seeds: int, prompts: int) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(mean=mean, low=float(low), high=float(high), seeds=seeds, prompts=prompts)


def _bootstrap(matrix: np.ndarray, samples: int, seed: int) -> Interval:
    """The mean of a seeds x prompts matrix with the percentile interval of its means over redrawn seeds and prompts."""
    n_seeds, n_prompts = matrix.shape
    rng = np.random.default_rng(seed)
    seed_draw, prompt_draw = rng.integers(0, n_seeds, size=(samples, n_seeds)), rng.integers(0, n_prompts, size=(samples, n_prompts))
    means = matrix[seed_draw[:, :, None], prompt_draw[:, None, :]].mean(axis=(1, 2))
    return _interval(means, float(matrix.mean()), n_seeds, n_prompts)


def bootstrap_mean(rows: dict[int, list[float]], samples: int = 2000, seed: int = 0) -> Interval:
    """Mean accuracy over seeds and prompts, with a 95% interval from redrawing both."""
    return _bootstrap(_matrix(rows)[1], samples, seed)


def paired_difference(a: dict[int, list[float]], b: dict[int, list[float]] | list[float], samples: int = 2000, seed: int = 0) -> Interval:
    """Mean of a - b on the same prompts, paired by seed. `b` as one row (a list, such as step 0's scores) pairs with
    every seed of `a`, whichever seeds those are; as a dict it pairs seed by seed."""
    if isinstance(b, list):
        b = {s: b for s in a}
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no seed in common: a paired difference needs the same seeds in both arms")
    _, left = _matrix({s: a[s] for s in common})
    _, right = _matrix({s: b[s] for s in common})
    if left.shape != right.shape:
        raise ValueError(f"the two arms were evaluated on different prompts ({left.shape[1]} vs {right.shape[1]})")
    return _bootstrap(left - right, samples, seed)
