"""From the judge's verdicts to rewards: the one path that training (ropd.reward), `ropd judge` and judge-eval share.

`score_verdicts` takes a rubric, the judge's verdicts (one per answer, rubric order), the answers, the
teacher answers and the JudgeConfig, and decides every criterion in this order:

1. the judge's boolean;
2. evidence check (`evidence_check`, needs `expected_evidence`): the group's required result R is the
   `expected` value the judge copied in more than half of the group's verdicts (copies compared with
   `answers_match`; empty, placeholder or unsafe copies do not count). The criteria *about the final
   result* are those whose text contains R (numbers numerically, text as a whole phrase: ropd.targets'
   occurrence rule), so the judge cannot invent one. For them, an answer meets the criterion when the
   `final_answer` the judge copied from it matches R, whatever boolean the judge gave. No R, no change;
3. verifiable targets (`verifiable_criteria`): a criterion whose target is usable and grounded in the
   teacher answers is decided by code from the answer's text (ropd.targets), overriding 1 and 2;
4. consensus criterion (`consensus_criterion`): one criterion appended, met when the answer's final
   answer equals the teacher answers' majority final answer.

reward = sum(points of met criteria) / sum(points). `decided_by` records, per criterion of the scored
rubric, which of "judge", "evidence", "target", "consensus" decided it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ropd.answers import answers_match
from ropd.config import JudgeConfig
from ropd.rubrics import consensus_answer, consensus_criterion, meets_consensus
from ropd.targets import clean_target, ground_target, meets_target, occurs_in
from ropd.types import Rubric, Verdict

Source = Literal["judge", "evidence", "target", "consensus"]

log = logging.getLogger(__name__)


@dataclass
class ScoredGroup:
    """Rewards of a group and how each criterion was decided."""

    rubric: Rubric  # the scored rubric: the consensus criterion appended when it was added
    met: list[list[bool]]  # per answer, one boolean per criterion of `rubric`
    rewards: list[float]
    decided_by: list[Source]  # per criterion of `rubric`
    dropped_targets: dict[str, str] = field(default_factory=dict)  # criterion id -> why its target was not used
    expected: str | None = None  # R of the evidence check, when one was found
    consensus: str | None = None  # the teacher answers' majority final answer, when the criterion was added

    def count(self, source: Source) -> int:
        """How many criteria `source` decided."""
        return sum(s == source for s in self.decided_by)


def rubric_reward(rubric: Rubric, met: list[bool]) -> float:
    """sum(points of met criteria) / sum(points), in [0, 1]."""
    if len(met) != len(rubric.criteria):
        raise ValueError(f"{len(met)} booleans for a rubric of {len(rubric.criteria)} criteria")
    total = rubric.total_points
    if total <= 0:
        raise ValueError("the rubric carries 0 points in total")
    return sum(c.points for c, ok in zip(rubric.criteria, met, strict=True) if ok) / total


def copied(verdict: Verdict, name: str) -> str | None:
    """An evidence string the judge copied into a verdict (`expected`, `final_answer`), or None when empty or unusable."""
    value = (verdict.model_extra or {}).get(name)
    return clean_target(value)[0] if isinstance(value, str) else None


def required_result(verdicts: Sequence[Verdict]) -> str | None:
    """R: the `expected` copy that more than half of the verdicts agree with, or None."""
    copies = [copied(v, "expected") for v in verdicts]
    given = [c for c in copies if c is not None]
    for candidate in given:
        if 2 * sum(answers_match(other, candidate) for other in given) > len(verdicts):
            return candidate
    return None


def score_verdicts(
    rubric: Rubric,
    verdicts: Sequence[Verdict | list[bool]],
    answers: Sequence[str],
    teacher_answers: Sequence[str],
    cfg: JudgeConfig,
    question: str = "",
) -> ScoredGroup:
    """Rewards for `answers` from the judge's verdicts plus the code checks `cfg` turns on (see the module docstring)."""
    if len(verdicts) != len(answers):
        raise ValueError(f"{len(verdicts)} verdicts for {len(answers)} answers")
    full = [v if isinstance(v, Verdict) else Verdict(answer=i + 1, met=v) for i, v in enumerate(verdicts)]
    met = [list(v.met) for v in full]
    decided_by: list[Source] = ["judge"] * len(rubric.criteria)
    scored = ScoredGroup(rubric=rubric, met=met, rewards=[], decided_by=decided_by)
    if cfg.evidence_check and cfg.expected_evidence and full:
        scored.expected = required_result(full)
        if scored.expected is not None:
            finals = [copied(v, "final_answer") for v in full]
            for j, criterion in enumerate(rubric.criteria):
                if occurs_in(scored.expected, criterion.text):
                    decided_by[j] = "evidence"
                    for row, final in zip(met, finals, strict=True):
                        row[j] = final is not None and answers_match(final, scored.expected)
    if cfg.verifiable_criteria:
        for j, criterion in enumerate(rubric.criteria):
            target, dropped = ground_target(criterion.target, list(teacher_answers), question)
            if target is None:
                if dropped != "absent":
                    scored.dropped_targets[criterion.id] = dropped or "dropped"
                continue
            decided_by[j] = "target"
            for row, answer in zip(met, answers, strict=True):
                row[j] = meets_target(target, answer)
    if cfg.consensus_criterion and (agreed := consensus_answer(list(teacher_answers))) is not None:
        scored.consensus = agreed
        scored.rubric = Rubric(criteria=[*rubric.criteria, consensus_criterion(rubric, agreed, cfg.consensus_points)])
        for row, answer in zip(met, answers, strict=True):
            row.append(meets_consensus(answer, agreed))
        decided_by.append("consensus")
    scored.rewards = [rubric_reward(scored.rubric, row) for row in met]
    if scored.dropped_targets:
        log.debug("targets dropped (the judge decides those criteria): %s", scored.dropped_targets)
    return scored


def decision_counts(groups: Sequence[ScoredGroup]) -> dict[str, Any]:
    """Mean criteria per group decided by each source, and targets dropped per group (for metrics and reports)."""
    if not groups:
        return {}
    n = len(groups)
    return {
        "judged": sum(g.count("judge") for g in groups) / n,
        "target": sum(g.count("target") for g in groups) / n,
        "evidence": sum(g.count("evidence") for g in groups) / n,
        "consensus": sum(g.count("consensus") for g in groups) / n,
        "dropped_targets": sum(len(g.dropped_targets) for g in groups) / n,
    }
