"""The rubric reward: TRL's GRPOTrainer calls it with a batch of completions and gets one reward each.

    reward = build_rubric_reward(config, prompts, cache)   # ropd.reward.setup
    GRPOTrainer(..., reward_funcs=[reward])

Per prompt group: k teacher answers (cached) -> a rubric induced from teacher answers and student
rollouts (or reused, per `judge.rubric_refresh`) -> one batched judge call over the rollouts (the
teacher answers too, per `judge.score_teacher_answers`) -> the code
checks and reward = sum(points of met criteria) / sum(points): all of it after the teacher answers is
ropd.reward.scoring.score_group, the path `ropd judge`, judge-eval and the experiments use too. Groups are scored
concurrently. On several processes (accelerate, DDP) a call first gathers every process's rollouts, so each prompt
group is scored whole, once, by one process, and every process gets every group's outcome back (`Processes`): TRL
may split a group's rollouts across processes, but no rubric or verdict ever sees part of a group, every process
returns the same rewards for the same rollouts, and rubrics induced on one process are reused on all. An exception
that is not a failed call (a bug, a broken cache) on any process reaches every process at the next exchange
(ropd.training.distributed), which all raise it, naming the process and phase: no process is left waiting. A group whose
teacher answers, rubric or verdicts failed after all retries gets None
for every rollout (TRL skips it), never a silent 0. When the prompts carry reference answers, each
call also logs how well the rewards separate correct from incorrect answers (quality/*); the
references never touch the rewards. With `groups_log` set (training sets <output dir>/groups.jsonl), every
call appends one JSON line per group (`ropd.reward.groups.group_record`) for `ropd inspect`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ropd.config import ORACLE, RunConfig
from ropd.data import prompt_id
from ropd.endpoints.llm import LLMClient, LLMError
from ropd.reward.answers import answer_text, completion_text, is_correct
from ropd.reward.groups import GroupRun, ends_on_pending_tool_call, group_indices, group_record, quality_metrics, rollout_values, true_rate
from ropd.reward.oracle import flip, oracle_met, oracle_rubric
from ropd.reward.rubrics import RubricStore
from ropd.reward.scoring import ScoredGroup, decision_counts, rubric_reward, score_group
from ropd.reward.teacher import TeacherError
from ropd.tools.toolbox import tool_rollout_text
from ropd.training.distributed import AccelerateProcesses, Failure, Processes, exchange
from ropd.types import GroupScore, PromptRow, Usage

PHASES = ("teacher", "rubric", "judge")
# Per scored group, mean criteria decided by each source (ropd.reward.scoring), and targets dropped back to the judge.
DECISION_METRICS = {
    "judged": "rubric/judged_criteria",
    "target": "rubric/verifiable_criteria",
    "evidence": "rubric/evidence_criteria",
    "consensus": "rubric/consensus_criteria",
    "dropped_targets": "rubric/dropped_targets",
}

log = logging.getLogger(__name__)


class PhaseError(Exception):
    """An unexpected exception (not a failed call) in one phase of scoring a group; its cause is the exception."""

    def __init__(self, phase: str):
        super().__init__(phase)
        self.phase = phase


class TeacherAnswers(Protocol):
    """What the reward needs from a teacher pool."""

    async def answers(self, row: PromptRow) -> list[str]: ...


def _prompt_row(pid: str, prompt: Any) -> PromptRow:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return PromptRow.model_validate({"id": pid, "prompt": messages})


class RubricReward:
    """An async reward function in TRL's convention; scores every prompt group of a batch concurrently.

    After each call, `last_group_scores` holds the GroupScore of every group in the batch (rewards
    in rollout order, teacher scores, the rubric, or the error). `groups_scored` and `groups_failed`
    count every group since the start, and `last_failure` is the latest group that got no reward.
    """

    __name__ = "rubric"  # TRL names the reward column after this

    def __init__(
        self,
        config: RunConfig,
        teacher: TeacherAnswers | None,
        rubric_client: LLMClient | None,
        judge_client: LLMClient | None,
        prompts: dict[str, PromptRow] | Iterable[PromptRow],
        processes: Processes | None = None,
        groups_log: Path | None = None,
    ):
        self.config = config
        self.groups_log = groups_log
        self.judge_config = config.judge
        self.teacher = teacher
        self.rubric_client = rubric_client
        self.judge_client = judge_client
        self.prompts = prompts if isinstance(prompts, dict) else {p.id: p for p in prompts}
        self.store = RubricStore(config.judge.rubric_refresh)
        self.last_group_scores: list[GroupScore] = []
        self.last_runs: list[GroupRun] = []
        self.groups_scored = 0
        self.groups_failed = 0
        self.last_failure: GroupScore | None = None
        self._calls = 0
        self._usage_seen: dict[str, Usage] = {}
        self._processes = processes
        self._usage_total: dict[str, Usage] | None = None  # usage summed over every process, as of the last call
        self.end_token_ids: set[int] | None = None  # the trainer's end tokens (set by `ropd train`): see _truncated

    @property
    def processes(self) -> Processes:
        """The processes this reward's calls span (accelerate's, made on first use, unless given)."""
        if self._processes is None:
            self._processes = AccelerateProcesses()
        return self._processes

    async def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        trainer_state: Any = None,
        log_metric: Any = None,
        log_extra: Any = None,
        **columns: Any,
    ) -> list[float | None]:
        step = trainer_state.global_step if trainer_state is not None else self._calls
        self._calls += 1
        processes = self.processes
        if not completions and processes.count == 1:
            return []
        failure, error = None, None
        try:
            local = self._local_items(prompts, completions, completion_ids, columns)
        except Exception as exc:
            local, failure, error = [], Failure.of(exc, "reading the completions", processes.index), exc
        # Every process's rollouts, in TRL's process order (how it gathers rewards), so no group is seen in part.
        parts = exchange(processes, local, failure, error)
        offset, count = sum(len(part) for part in parts[: processes.index]), len(completions)
        runs = await self._score_shared([item for part in parts for item in part], step)
        rewards: list[float | None] = []
        failure, error = None, None
        try:
            rewards = self._finish(runs, step, trainer_state, log_metric, log_extra, offset, count)
        except Exception as exc:
            failure, error = Failure.of(exc, "logging the rewards", processes.index), exc
        if processes.count > 1 or error is not None:  # no process leaves for TRL's next collective while one failed
            exchange(processes, None, failure, error)
        return rewards

    def _local_items(self, prompts: list[Any], completions: list[Any], completion_ids: Any, columns: dict[str, Any]) -> list[tuple]:
        """This process's rollouts as (prompt id, prompt, text, reference answer, cut off), for the exchange."""
        ids = [str(i) for i in columns["id"]] if columns.get("id") is not None else [prompt_id(p) for p in prompts]
        texts = [tool_rollout_text(c, completion_text) for c in completions]  # a tool trajectory whole, marked
        references = columns.get("answer") or [None] * len(texts)
        cut = self._truncated(completions, completion_ids)
        return list(zip(ids, prompts, texts, references, cut, strict=True))

    async def _score_shared(self, batch: list[tuple], step: int) -> list[GroupRun]:
        """This process's share of the batch's groups scored; every group's outcome, on every process (`_share`)."""
        processes = self.processes
        groups = list(group_indices([item[0] for item in batch]).items())
        mine = groups[processes.index :: processes.count]  # each group is scored once, by one process
        outcomes = await asyncio.gather(*(self._score_batch_group(batch, indices, step) for _, indices in mine))
        scored = [run for run in outcomes if isinstance(run, GroupRun)]
        failed = [pair for pair in outcomes if not isinstance(pair, GroupRun)]
        failure, error = min(failed, key=lambda pair: pair[0].at) if failed else (None, None)
        return self._share(scored, step, failure, error)

    async def _score_batch_group(self, batch: list[tuple], indices: list[int], step: int) -> GroupRun | tuple[Failure, Exception]:
        """One group of the gathered batch scored, or the failure it raised (never raised here: every process must go on
        to the next exchange)."""
        pid, prompt, _, reference, _ = batch[indices[0]]
        texts = [batch[i][2] for i in indices]
        phase = "rubric or verdicts"
        try:
            run = await self.score_group(self._row(pid, prompt), texts, step, indices, [batch[i][4] for i in indices])
            phase = "reference check"
            self._check_against_reference(run, texts, reference)
        except PhaseError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            return Failure.of(cause, f"scoring prompt '{pid}' ({exc.phase})", self.processes.index), cause
        except Exception as exc:
            return Failure.of(exc, f"scoring prompt '{pid}' ({phase})", self.processes.index), exc
        return run

    def _finish(self, runs: list[GroupRun], step: int, trainer_state: Any, log_metric: Any, log_extra: Any, offset: int, count: int):
        """This process's rewards from every group's outcome; tallies, groups.jsonl (process 0) and metrics logged."""
        rewards: list[float | None] = rollout_values(runs, lambda run: run.score.rewards, offset, count)
        self.last_runs = runs
        self.last_group_scores = [run.score for run in runs]
        self._tally(runs)
        if self.groups_log is not None and self.processes.index == 0:  # every process holds every group: one writes them
            self._log_groups(runs, step + 1 if trainer_state is not None else self._calls)  # the step metrics.jsonl logs
        if log_metric is not None:
            for name, value in self.metrics(runs).items():
                log_metric(name, value)
        if log_extra is not None:
            log_extra("judge_final_answer", rollout_values(runs, lambda run: run.final_answers, offset, count))
        return rewards

    def _share(self, scored: list[GroupRun], step: int, failure: Failure | None = None, error: Exception | None = None) -> list[GroupRun]:
        """Every process's scored groups, in batch order, on every process; the rubrics induced this step enter every
        process's store (so reuse does not depend on which process scores a group), and usage is summed over processes.
        A failure on any process (`failure`: this one's) raises ProcessFailureError on all of them."""
        induced = {
            run.score.prompt_id: rubric
            for run in scored
            if run.failed_phase in (None, "judge") and not run.rubric_reused and (rubric := self.store.get(run.score.prompt_id, step))
        }
        usage = {role: u.model_copy() for role, u in self._local_usage().items()}
        parts = exchange(self.processes, (scored, induced, usage), failure, error)
        if len(parts) == 1:
            return scored
        total: dict[str, Usage] = {}
        for _, rubrics, used in parts:
            for pid, rubric in rubrics.items():
                self.store.put(pid, step, rubric)
            for role, u in used.items():
                total.setdefault(role, Usage()).add(u)
        self._usage_total = total
        return sorted((run for runs, _, _ in parts for run in runs), key=lambda run: run.indices[0])

    def _log_groups(self, runs: list[GroupRun], step: int) -> None:
        """Append one JSON line per group to `groups_log`, in one write."""
        assert self.groups_log is not None
        lines = "".join(json.dumps(group_record(run, step), ensure_ascii=False) + "\n" for run in runs)
        with self.groups_log.open("a", encoding="utf-8") as sink:
            sink.write(lines)

    def _tally(self, runs: list[GroupRun]) -> None:
        failed = [run.score for run in runs if run.score.failed]
        self.groups_scored += len(runs)
        self.groups_failed += len(failed)
        if failed:
            self.last_failure = failed[-1]

    def _row(self, pid: str, prompt: Any) -> PromptRow:
        return self.prompts.get(pid) or _prompt_row(pid, prompt)

    def _check_against_reference(self, run: GroupRun, rollouts: list[str], column_answer: Any) -> None:
        """Label rollouts and teacher answers correct or not (the prompt row's answer, else the answer column): for metrics only."""
        row = self.prompts.get(run.score.prompt_id)
        reference = (row.answer if row is not None else None) or column_answer
        if run.score.failed or reference is None or not str(reference).strip():
            return
        extra = (row.model_extra or {}) if row is not None else {}
        task, metadata = extra.get("task"), extra.get("metadata")
        run.correct = [is_correct(text, reference, task, metadata) for text in rollouts]
        run.teacher_correct = [is_correct(text, reference, task, metadata) for text in run.teacher_answers]

    def _truncated(self, completions: list[Any], completion_ids: list[list[int]] | None) -> list[bool]:
        """Per completion: was it cut off? As TRL's mask_truncated_completions sees it, a completion is cut off when its
        last token is not an end token (`end_token_ids`: the trainer's end-of-sequence ids and pad token; unset, when it
        reached max_completion_length tokens). A tool rollout that ends on a tool call left unanswered (its output
        would pass the length limit, or the rounds ran out) never answered either, whatever its last token."""
        token_ids: list[list[int] | None] = list(completion_ids) if completion_ids is not None else [None] * len(completions)
        return [
            (ids is not None and self._cut_off(ids)) or ends_on_pending_tool_call(completion)
            for ids, completion in zip(token_ids, completions, strict=True)
        ]

    def _cut_off(self, ids: list[int]) -> bool:
        if self.end_token_ids is None:
            return len(ids) >= self.config.training.max_completion_length
        return not ids or ids[-1] not in self.end_token_ids

    async def score_group(
        self, row: PromptRow, rollouts: list[str], step: int, indices: list[int] | None = None, truncated: list[bool] | None = None
    ) -> GroupRun:
        """Teacher answers -> rubric (induced or reused) -> verdicts for one prompt group (ropd.reward.scoring.score_group);
        with training.truncated_reward set, rollouts cut off (see _truncated) get that reward instead.
        With judge.model 'oracle', the analysis-only oracle decides instead (`oracle_group`)."""
        run = GroupRun(score=GroupScore(prompt_id=row.id), indices=indices if indices is not None else list(range(len(rollouts))))
        run.question, run.rollouts = row.question, list(rollouts)
        run.truncated = list(truncated) if truncated is not None else [False] * len(rollouts)
        if self.judge_config.model == ORACLE:
            return self.oracle_group(run, row, step)
        try:
            clock = time.monotonic()
            assert self.teacher is not None, "a rubric reward without the oracle needs a teacher"
            references = [a for a in await self.teacher.answers(row) if answer_text(a)]
            run.seconds["teacher"] = time.monotonic() - clock
            if not references:
                raise TeacherError(f"no usable teacher answer for prompt '{row.id}' (all empty after the last </think>)")
        except (LLMError, TeacherError) as exc:
            return self._failed(run, "teacher", str(exc))
        except Exception as exc:  # not a failed call: a bug or a broken cache, which stops the run (PhaseError)
            raise PhaseError("teacher answers") from exc
        run.teacher_answers = references
        reused = self.store.get(row.id, step)
        outcome = await score_group(
            row.question,
            references,
            rollouts,
            self.judge_config,
            self.rubric_client,
            self.judge_client,
            seed=f"{row.id}:{step}",
            rubric=reused,
        )
        run.rubric, run.rubric_reused = outcome.rubric, outcome.rubric_reused
        if outcome.rubric is not None and not outcome.rubric_reused:
            self.store.put(row.id, step, outcome.rubric)
        run.seconds.update(outcome.seconds)
        if outcome.failed_phase is not None or outcome.scored is None:
            return self._failed(run, outcome.failed_phase or "judge", outcome.error or "no verdicts")
        run.verdicts, run.scored = outcome.verdicts, outcome.scored
        run.score = GroupScore(
            prompt_id=row.id,
            rewards=self._with_truncated_reward(run.scored.rewards, run.truncated),
            verdicts=run.scored.met,
            rubric=run.scored.rubric,
            decided_by=list(run.scored.decided_by),
            teacher_scores=outcome.teacher_scores,
        )
        if outcome.teacher_error is not None:
            log.warning("prompt '%s': teacher answers not scored (%s)", row.id, outcome.teacher_error)
        run.final_answers = [_evidence(v.model_extra) for v in outcome.verdicts]
        return run

    def oracle_group(self, run: GroupRun, row: PromptRow, step: int) -> GroupRun:
        """The oracle's rubric and booleans for one group (ropd.reward.oracle), each boolean flipped with judge.oracle_noise."""
        clock = time.monotonic()
        try:
            rubric = oracle_rubric(row, self.judge_config.max_points)
        except ValueError as exc:
            return self._failed(run, "judge", str(exc))
        exact = [oracle_met(row, rubric, text) for text in run.rollouts]
        met = flip(exact, self.judge_config.oracle_noise, f"{self.config.training.seed}:{row.id}:{step}")
        rewards = [rubric_reward(rubric, row_met) for row_met in met]
        run.rubric = rubric
        run.scored = ScoredGroup(rubric=rubric, met=met, rewards=rewards, decided_by=["oracle"] * len(rubric.criteria))
        run.score = GroupScore(
            prompt_id=row.id,
            rewards=self._with_truncated_reward(rewards, run.truncated),
            verdicts=met,
            rubric=rubric,
            decided_by=list(run.scored.decided_by),
        )
        run.seconds["judge"] = time.monotonic() - clock
        return run

    def _with_truncated_reward(self, rewards: list[float], truncated: list[bool]) -> list[float]:
        """The rubric rewards, with training.truncated_reward (when set) for the rollouts cut off (see _truncated)."""
        value = self.config.training.truncated_reward
        return [value if value is not None and cut else reward for reward, cut in zip(rewards, truncated, strict=True)]

    def _failed(self, run: GroupRun, phase: str, error: str) -> GroupRun:
        """A group that got no reward: the phase that failed and why, logged."""
        run.failed_phase = phase
        run.score.error = f"{phase}: {error}"
        log.warning("prompt '%s': no reward for its %d rollouts this step (%s)", run.score.prompt_id, len(run.rollouts), run.score.error)
        return run

    def metrics(self, runs: list[GroupRun]) -> dict[str, float]:
        """Scalars for TRL's log: rewards, failure rates, teacher diagnostics, rubric size, usage, phase timings.

        time/<phase> is the mean seconds a group spent in that phase (groups run concurrently).
        """
        n = len(runs)
        scored = [r for r in runs if not r.score.failed]
        rewards = [x for r in scored for x in r.score.rewards or []]
        out: dict[str, float] = {
            "rubric/group_failure_rate": (n - len(scored)) / n,
            **{f"rubric/{phase}_failure_rate": sum(r.failed_phase == phase for r in runs) / n for phase in PHASES},
            "rubric/partial_group_rate": sum(len(r.indices) < self.config.training.num_generations for r in runs) / n,
        }
        cut = [c for r in runs for c in r.truncated]
        if cut:
            out["rubric/truncated_rate"] = true_rate(cut)
        if rewards:
            out["rubric/reward_mean"] = statistics.fmean(rewards)
            out["rubric/reward_std"] = statistics.pstdev(rewards)
        if scored:
            out["rubric/criteria"] = statistics.fmean(len(r.score.rubric.criteria) for r in scored)  # type: ignore[union-attr]
            out["rubric/reuse_rate"] = sum(r.rubric_reused for r in scored) / len(scored)
            counts = decision_counts([r.scored for r in scored if r.scored is not None])
            for name, metric in DECISION_METRICS.items():
                if name in counts:
                    out[metric] = counts[name]
        teacher_groups = [r.score for r in scored if r.score.teacher_scores]
        if teacher_groups:
            out["rubric/teacher_score_mean"] = statistics.fmean(x for s in teacher_groups for x in s.teacher_scores)
            beaten = sum(max(s.rewards or [0.0]) > min(s.teacher_scores) for s in teacher_groups)
            out["rubric/student_beats_weakest_teacher_rate"] = beaten / len(teacher_groups)
        for phase in PHASES:
            spent = [r.seconds[phase] for r in runs if phase in r.seconds]
            if spent:
                out[f"time/{phase}"] = statistics.fmean(spent)
        out.update(quality_metrics(scored))
        out.update(self._usage_metrics())
        return out

    def _usage_metrics(self) -> dict[str, float]:
        """Tokens (prompt tokens, and of those the ones the server's prompt cache served), cost, requests (attempts,
        retries included), retries and failed calls per role since the previous call, and the share of results served
        from the cache."""
        out: dict[str, float] = {}
        hits = fetched = 0
        for role, usage in self.usage_by_role().items():
            before = self._usage_seen.get(role, Usage())
            delta = {name: getattr(usage, name) - getattr(before, name) for name in Usage.model_fields}
            self._usage_seen[role] = usage.model_copy()
            out[f"{role}/tokens"] = delta["prompt_tokens"] + delta["completion_tokens"]
            out[f"{role}/prompt_tokens"] = delta["prompt_tokens"]
            out[f"{role}/cached_tokens"] = delta["cached_tokens"]  # prompt tokens the server did not compute again
            if not delta["unpriced_requests"]:  # left out when unknown: a model without a price
                out[f"{role}/cost_usd"] = delta["cost_usd"]
            out[f"{role}/requests"] = delta["requests"]
            out[f"{role}/retries"] = delta["retries"]
            out[f"{role}/failures"] = delta["failures"]
            hits += delta["cache_hits"]
            fetched += delta["requests"] - delta["retries"]
        if hits + fetched:
            out["rubric/cache_hit_rate"] = hits / (hits + fetched)
        return out

    def usage_by_role(self) -> dict[str, Usage]:
        """Usage accumulated so far by the teacher (when it reports any), the rubricator and the judge; on several
        processes, summed over all of them as of the last call."""
        if self._usage_total is not None:
            return {role: u.model_copy() for role, u in self._usage_total.items()}
        return self._local_usage()

    def _local_usage(self) -> dict[str, Usage]:
        """This process's clients' usage (live objects)."""
        clients = {"rubricator": self.rubric_client, "judge": self.judge_client}
        usages = {role: client.usage for role, client in clients.items() if client is not None}  # none for the oracle
        teacher_usage = getattr(self.teacher, "usage", None)
        if isinstance(teacher_usage, Usage):
            usages = {"teacher": teacher_usage, **usages}
        return usages


def _evidence(extra: dict[str, Any] | None) -> str | None:
    value = (extra or {}).get("final_answer")
    return value if isinstance(value, str) else None
