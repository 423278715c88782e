"""One prompt group's outcome in the rubric reward, and what the logs make of it.

`GroupRun` is a group's score plus what the logs need (failed phase, seconds per phase, evidence, labels);
`group_record` is its line in groups.jsonl (what `ropd inspect` shows), `quality_metrics` the quality/* metrics of a
call's groups that carry a reference answer.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from ropd.evaluation.quality import pair_counts, roc_auc
from ropd.reward.scoring import ScoredGroup
from ropd.tools.toolbox import readable_trajectory
from ropd.types import GroupScore, Rubric, Verdict


@dataclass
class GroupRun:
    """One group's outcome plus what the logs need: which phase failed, seconds per phase, evidence."""

    score: GroupScore
    indices: list[int]
    failed_phase: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    rubric_reused: bool = False
    final_answers: list[str | None] = field(default_factory=list)
    teacher_answers: list[str] = field(default_factory=list)
    correct: list[bool] | None = None  # rollouts checked against the prompt's reference answer, when it has one
    teacher_correct: list[bool] | None = None
    scored: ScoredGroup | None = None  # how each criterion of the rollouts' rubric was decided
    question: str = ""
    rollouts: list[str] = field(default_factory=list)
    rubric: Rubric | None = None  # the rubric as induced or reused, also when judging then failed
    verdicts: list[Verdict] = field(default_factory=list)  # the judge's own verdicts, evidence fields included
    truncated: list[bool] = field(default_factory=list)  # per rollout: cut off (no end token, or a tool call left unanswered)


def quality_metrics(runs: list[GroupRun]) -> dict[str, float]:
    """How well the rewards of groups with a reference answer separate correct from incorrect answers (see ropd.evaluation.quality).

    quality/auc and quality/pairwise_acc (ties count as misses; quality/pairwise_ties is their share) rank the
    rollouts; the *_with_teacher variants add the judged teacher answers to each group. Undefined values are left out.
    """
    labelled = [r for r in runs if r.correct is not None and r.score.rewards is not None]
    if not labelled:
        return {}
    student = [(r.score.rewards or [], r.correct or []) for r in labelled]
    out: dict[str, float] = {"quality/student_correct_rate": true_rate([y for _, labels in student for y in labels])}
    teacher_labels = [y for r in labelled for y in r.teacher_correct or []]
    if teacher_labels:
        out["quality/teacher_correct_rate"] = true_rate(teacher_labels)
    both = [
        (scores + r.score.teacher_scores, labels + (r.teacher_correct or []))
        for r, (scores, labels) in zip(labelled, student, strict=True)
        if len(r.score.teacher_scores) == len(r.teacher_correct or [])
    ]
    for suffix, groups in (("", student), ("_with_teacher", both if teacher_labels else [])):
        auc = roc_auc([s for scores, _ in groups for s in scores], [y for _, labels in groups for y in labels]) if groups else None
        if auc is not None:
            out[f"quality/auc{suffix}"] = auc
        counts = pair_counts(groups)
        if counts.pairs:
            out[f"quality/pairwise_acc{suffix}"] = counts.wins / counts.pairs
            out[f"quality/pairwise_ties{suffix}"] = counts.ties / counts.pairs
    return out


_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s@]+@")


_BEARER = re.compile(r"(?i)\bbearer\s+\S+")


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


def redact(text: str) -> str:
    """Text with URL credentials, bearer tokens and sk-... keys masked (error messages written to disk)."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _KEY_LIKE.sub("sk-***", _BEARER.sub("Bearer ***", text))


def group_advantages(rewards: list[float] | None) -> list[float] | None:
    """reward - group mean (before any scaling by the trainer); exactly 0 for a group without spread, None when failed."""
    if not rewards:
        return None
    from ropd.training.trainers import ZERO_SPREAD_TOLERANCE  # imports TRL: only when training

    if max(rewards) - min(rewards) <= ZERO_SPREAD_TOLERANCE:
        return [0.0] * len(rewards)
    mean = statistics.fmean(rewards)
    return [r - mean for r in rewards]


def group_record(run: GroupRun, step: int) -> dict[str, Any]:
    """One group of one step as a JSON-ready dict (groups.jsonl): texts, rubric, verdicts, rewards, labels, error.

    `verdicts` are the booleans that count (the scored rubric's criteria, code checks applied); `judge_verdicts`
    the judge's own, with the evidence fields it copied (`evidence`). No keys or endpoint URLs are written.
    """
    score, scored = run.score, run.scored
    rubric = score.rubric or run.rubric
    return {
        "step": step,
        "prompt_id": score.prompt_id,
        "question": run.question,
        "teacher_answers": [readable_trajectory(t) for t in run.teacher_answers],
        "rollouts": [readable_trajectory(t) for t in run.rollouts],
        "rubric": rubric.model_dump(mode="json", exclude_none=True)["criteria"] if rubric is not None else None,
        "decided_by": score.decided_by,
        "verdicts": score.verdicts,
        "judge_verdicts": [list(v.met) for v in run.verdicts] or None,
        "evidence": [dict(verdict.model_extra or {}) for verdict in run.verdicts] or None,
        "expected": scored.expected if scored is not None else None,
        "consensus": scored.consensus if scored is not None else None,
        "dropped_targets": scored.dropped_targets if scored is not None else {},
        "rewards": score.rewards,
        "truncated": run.truncated,
        "advantages": group_advantages(score.rewards),
        "correct": run.correct,
        "teacher_correct": run.teacher_correct,
        "teacher_scores": score.teacher_scores,
        "rubric_reused": run.rubric_reused,
        "seconds": {k: round(v, 3) for k, v in run.seconds.items()},
        "failed_phase": run.failed_phase,
        "error": redact(score.error) if score.error else None,
    }


def true_rate(values: list[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def group_indices(ids: list[str]) -> dict[str, list[int]]:
    """Positions of each prompt id's completions, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, pid in enumerate(ids):
        groups.setdefault(pid, []).append(index)
    return groups


def ends_on_pending_tool_call(completion: Any) -> bool:
    """Whether a chat completion's last message is an assistant tool call that got no tool output after it."""
    if not isinstance(completion, list) or not completion or not isinstance(completion[-1], dict):
        return False
    last = completion[-1]
    return last.get("role", "assistant") == "assistant" and bool(last.get("tool_calls"))


def rollout_values(runs: list[GroupRun], values: Any, offset: int, count: int) -> list[Any]:
    """Per rollout of this process (batch positions offset .. offset + count - 1): the value `values(run)` gives it."""
    out: list[Any] = [None] * count
    for run in runs:
        for index, value in zip(run.indices, values(run) or [None] * len(run.indices), strict=True):
            if offset <= index < offset + count:
                out[index - offset] = value
    return out
