"""Reward quality: how well rewards separate correct answers from incorrect ones.

A rubric reward is only worth training on if it ranks right answers above wrong ones. Two numbers
say how often it does, given answers labelled correct or incorrect by checking them against a
reference answer (`ropd.reward.answers.is_correct`):

  roc_auc             over all answers: the chance a random correct answer scores above a random
                      incorrect one (ties count half); 0.5 is noise, 1.0 perfect separation
  pairwise_accuracy   within each prompt group (what a group-relative advantage sees): the share of
                      (correct, incorrect) pairs where the correct answer scores strictly higher;
                      ties count as failures, and `pair_counts` reports them separately

Reference answers are used for this measurement only, never for the reward itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairCounts:
    """Outcomes over (correct, incorrect) pairs of answers to the same prompt."""

    wins: int = 0
    ties: int = 0
    losses: int = 0

    @property
    def pairs(self) -> int:
        return self.wins + self.ties + self.losses

    def plus(self, other: PairCounts) -> PairCounts:
        return PairCounts(self.wins + other.wins, self.ties + other.ties, self.losses + other.losses)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `scores` for `labels` (True = correct); ties count half.

    Equals the share of (correct, incorrect) pairs in which the correct one scores higher, over
    all answers pooled. None when every label is the same (AUC is undefined with one class).
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return None
    counts = _count_pairs(positives, negatives)
    return (counts.wins + 0.5 * counts.ties) / counts.pairs


def pair_counts(groups: Iterable[tuple[Sequence[float], Sequence[bool]]]) -> PairCounts:
    """Wins, ties and losses of correct over incorrect answers, pairing answers within each group only."""
    total = PairCounts()
    for scores, labels in groups:
        if len(scores) != len(labels):
            raise ValueError(f"a group has {len(scores)} scores for {len(labels)} labels")
        positives = [s for s, y in zip(scores, labels, strict=True) if y]
        negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
        total = total.plus(_count_pairs(positives, negatives))
    return total


def pairwise_accuracy(groups: Iterable[tuple[Sequence[float], Sequence[bool]]]) -> float | None:
    """Within-group share of (correct, incorrect) pairs where the correct answer scores strictly higher.

    `groups` holds (scores, labels) per prompt. A tie counts as a failure (0), since a tied pair
    gives the policy gradient nothing to learn from; see `pair_counts` for the tie count. Pairs are
    pooled over groups (each pair weighs the same). None when no group has both a correct and an
    incorrect answer.
    """
    counts = pair_counts(groups)
    return counts.wins / counts.pairs if counts.pairs else None


def _count_pairs(positives: Sequence[float], negatives: Sequence[float]) -> PairCounts:
    wins = sum(p > n for p in positives for n in negatives)
    ties = sum(p == n for p in positives for n in negatives)
    return PairCounts(wins, ties, len(positives) * len(negatives) - wins - ties)
