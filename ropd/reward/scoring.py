"""Scoring a group of answers: the one path that training (ropd.reward.rubric_reward), `ropd judge`, judge-eval and the experiments share.

`score_group` takes a question, its teacher answers, the student's answers (rollouts), the rubric settings
(JudgeConfig) and the rubricator and judge clients: it induces a rubric (or reuses one it is given), asks
the judge for verdicts, and scores them with `score_verdicts`. With `score_teacher_answers` it also
judges the teacher answers for diagnostics: in calls of their own, or in the rollouts' call as published.

`score_verdicts` takes a rubric, the judge's verdicts (one per answer, rubric order), the answers, the
teacher answers and the JudgeConfig, and decides every criterion in this order:

1. the judge's boolean;
2. evidence check (`evidence_check`, needs `expected_evidence`): the group's required result R is the
   `expected` value the judge copied in more than half of the group's verdicts (copies compared with
   `answers_match`; empty, placeholder or unsafe copies do not count). The criteria *about the final
   result* are those whose text contains R (numbers numerically, text as a whole phrase: ropd.reward.targets'
   occurrence rule), so the judge cannot invent one. For them, an answer meets the criterion when the
   `final_answer` the judge copied from it matches R, whatever boolean the judge gave. No R, no change;
3. verifiable targets (`verifiable_criteria`): a criterion whose target is usable and grounded in the
   teacher answers is decided by code from the answer's text (ropd.reward.targets), overriding 1 and 2;
4. consensus criterion (`consensus_criterion`): one criterion appended, met when the answer's final
   answer equals the teacher answers' majority final answer.

reward = sum(points of met criteria) / sum(points). `decided_by` records, per criterion of the scored
rubric, which of "judge", "evidence", "target", "consensus" decided it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ropd.config import JudgeConfig
from ropd.endpoints.llm import LLMError
from ropd.reward.answers import answers_match
from ropd.reward.judge import JudgeTally, judge_verdicts
from ropd.reward.rubrics import consensus_answer, consensus_criterion, induce_rubric, meets_consensus
from ropd.reward.targets import clean_target, ground_target, meets_target, occurs_in
from ropd.types import Rubric, Verdict

if TYPE_CHECKING:
    from ropd.endpoints.llm import LLMClient

Source = Literal["judge", "evidence", "target", "consensus", "oracle"]  # oracle: ropd.reward.oracle, analysis only

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


# --- a whole group: rubric, verdicts, rewards -------------------------------------------------------------


@dataclass
class GroupOutcome:
    """What scoring one group gave: the rubric, the judge's verdicts and the scored group, or the phase that failed."""

    rubric: Rubric | None = None  # as induced or reused, also when judging then failed
    rubric_reused: bool = False
    verdicts: list[Verdict] = field(default_factory=list)  # the judge's own, per rollout, evidence fields included
    scored: ScoredGroup | None = None  # the rewards, with how each criterion was decided
    teacher_scores: list[float] = field(default_factory=list)  # with score_teacher_answers, when that call succeeded
    teacher_error: str | None = None  # why the teacher answers were not scored (the rollouts keep their rewards)
    failed_phase: Literal["rubric", "judge"] | None = None
    error: str | None = None  # the LLMError of the failed phase
    seconds: dict[str, float] = field(default_factory=dict)  # per phase ("rubric", "judge") that ran to its end


async def score_group(
    question: str,
    teacher_answers: list[str],
    rollouts: list[str],
    cfg: JudgeConfig,
    rubricator: LLMClient | None,
    judge: LLMClient,
    *,
    seed: int | str,
    rubric: Rubric | None = None,
    tally: JudgeTally | None = None,
) -> GroupOutcome:
    """Rubric (induced by `rubricator`, unless `rubric` is given), verdicts from `judge` and rewards for `rollouts`.

    The rollouts are shuffled by `seed` for the judge. The teacher answers are judged for diagnostics only, per
    `cfg.score_teacher_answers`: "separate" in calls of their own, shuffled by f"{seed}:teacher"; "in_call" shuffled in
    with the rollouts (by `seed`), as published; "off" not at all. A rubricator or judge call that fails after all
    retries and re-asks ends the group with `failed_phase` and `error` set, never raises; a failed
    teacher-answer call only sets `teacher_error`.
    """
    outcome = GroupOutcome(rubric=rubric, rubric_reused=rubric is not None)
    phase, clock = "rubric", time.monotonic()
    try:
        if rubric is None:
            if rubricator is None:
                raise ValueError("score_group needs a rubricator client when no rubric is given")
            rubric = outcome.rubric = await induce_rubric(rubricator, question, teacher_answers, rollouts, cfg)
        outcome.seconds["rubric"] = time.monotonic() - clock
        phase, clock = "judge", time.monotonic()
        in_call = cfg.score_teacher_answers == "in_call"
        judged = [*rollouts, *teacher_answers] if in_call else rollouts  # in_call: one shuffled group, as published
        calls = [judge_verdicts(judge, question, rubric, judged, cfg, seed=seed, tally=tally)]
        if cfg.score_teacher_answers == "separate":  # their own call(s): the rollouts' call never holds them
            calls.append(judge_verdicts(judge, question, rubric, teacher_answers, cfg, seed=f"{seed}:teacher"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        outcome.seconds["judge"] = time.monotonic() - clock
        if isinstance(results[0], BaseException):
            raise results[0]
    except LLMError as exc:
        outcome.failed_phase, outcome.error = phase, str(exc)  # type: ignore[assignment]
        return outcome
    verdicts = list(results[0])  # type: ignore[arg-type]
    if in_call:  # split the one call's verdicts back into the rollouts' and the teacher answers'
        verdicts, results = verdicts[: len(rollouts)], [None, verdicts[len(rollouts) :]]
    outcome.verdicts = verdicts
    outcome.scored = score_verdicts(rubric, outcome.verdicts, rollouts, teacher_answers, cfg, question)
    if len(results) > 1:
        teacher_verdicts = results[1]
        if isinstance(teacher_verdicts, LLMError):  # diagnostics only: the rollouts keep their rewards
            outcome.teacher_error = str(teacher_verdicts)
        elif isinstance(teacher_verdicts, BaseException):
            raise teacher_verdicts
        else:
            outcome.teacher_scores = score_verdicts(rubric, teacher_verdicts, teacher_answers, teacher_answers, cfg, question).rewards
    return outcome
