"""Reward quality: AUC and pairwise accuracy against hand-computed values, and the quality/* metrics the rubric reward logs."""

import asyncio
from types import SimpleNamespace

import pytest

from ropd.config import PUBLISHED_JUDGE, RunConfig
from ropd.evaluation.quality import PairCounts, pair_counts, pairwise_accuracy, roc_auc
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.teacher import TeacherPool
from ropd.testing.judge_scripts import contains_rule, is_judge_request, judge_reply, rubric_json, scripted_client, user_text
from ropd.testing.scripted_server import ScriptedServer
from ropd.types import PromptRow

pytestmark = pytest.mark.timeout(60)


def test_auc_counts_ties_half():
    # correct: 0.9, 0.5; incorrect: 0.5, 0.1 -> pairs: win, win, tie, win
    assert roc_auc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(3.5 / 4)
    assert roc_auc([0.1, 0.9], [True, False]) == 0.0
    assert roc_auc([0.3, 0.3, 0.3], [True, False, True]) == 0.5


def test_auc_is_undefined_with_one_class():
    assert roc_auc([0.1, 0.2], [True, True]) is None
    assert roc_auc([0.1, 0.2], [False, False]) is None
    assert roc_auc([], []) is None
    with pytest.raises(ValueError, match="2 scores for 3 labels"):
        roc_auc([0.1, 0.2], [True, False, True])


def test_pairwise_accuracy_pairs_within_groups_only_and_ties_count_zero():
    groups = [
        ([1.0, 0.2, 0.2], [True, False, False]),  # 2 wins
        ([0.5, 0.5, 0.7], [True, False, False]),  # 1 tie, 1 loss
        ([0.9, 0.1], [True, True]),  # no pair: one class
    ]
    assert pair_counts(groups) == PairCounts(wins=2, ties=1, losses=1)
    assert pairwise_accuracy(groups) == 0.5
    # pooled over groups, the same scores rank differently: 1.0 beats all four wrong ones, 0.5 beats two, ties one
    pooled = [s for scores, _ in groups[:2] for s in scores], [y for _, labels in groups[:2] for y in labels]
    assert roc_auc(*pooled) == pytest.approx(6.5 / 8)


def test_pairwise_accuracy_is_undefined_without_a_mixed_group():
    assert pairwise_accuracy([([0.3, 0.4], [True, True]), ([0.1], [False])]) is None
    assert pairwise_accuracy([]) is None
    with pytest.raises(ValueError, match="2 scores for 1 labels"):
        pairwise_accuracy([([0.1, 0.2], [True])])


# --- the metrics RubricReward logs ----------------------------------------------------------------------

CRITERIA = [("mentions 42", 5), ("mentions because", 2), ("mentions **", 1), ("mentions sure", 2)]
TEACHER_ANSWER = "<think>6*7</think>sure: it is 42 because 6*7=42. **42**"  # 10/10, correct
# rewards 0.8, 0.5, 0.5, 0.0; correct, correct, wrong (final 41), wrong
ROLLOUTS = ["It is 42 because **", "42", "sure because ** 41", "no idea"]
REWARDS = [0.8, 0.5, 0.5, 0.0]


def handler(body):
    if is_judge_request(body):
        return judge_reply(body, contains_rule)
    if "<<<BEGIN REFERENCE" in user_text(body):
        return rubric_json(CRITERIA)
    return TEACHER_ANSWER


def make_reward(server, rows, score_teacher: bool = False) -> RubricReward:
    """The published judge (its booleans only), so that REWARDS, ties included, are the rubric's points."""
    judge = {**PUBLISHED_JUDGE, "score_teacher_answers": score_teacher}
    config = RunConfig.model_validate({"training": {"num_generations": 4}, "judge": judge})
    teacher = TeacherPool(scripted_client(server, "teacher"), num_answers=2)
    return RubricReward(config, teacher, scripted_client(server, "rubricator"), scripted_client(server, "judge"), rows)


def call(reward, rows, answers=None):
    metrics: dict[str, float] = {}
    ids = [r.id for r in rows for _ in ROLLOUTS]
    columns = {"answer": [a for a in answers for _ in ROLLOUTS]} if answers is not None else {}
    rewards = asyncio.run(
        reward(
            prompts=[[m.model_dump() for m in r.prompt] for r in rows for _ in ROLLOUTS],
            completions=[[{"role": "assistant", "content": t}] for _ in rows for t in ROLLOUTS],
            id=ids,
            trainer_state=SimpleNamespace(global_step=0),
            log_metric=metrics.__setitem__,
            **columns,
        )
    )
    return rewards, metrics


def rows(answer: str | None = None) -> list[PromptRow]:
    return [PromptRow.model_validate({"id": "p1", "prompt": [{"role": "user", "content": "What is 6*7?"}], "answer": answer})]


def test_reward_logs_quality_against_the_reference_answer():
    with ScriptedServer(handler) as server:
        rewards, metrics = call(make_reward(server, rows("42"), score_teacher=True), rows("42"))
    assert rewards == pytest.approx(REWARDS)
    assert metrics["quality/auc"] == pytest.approx(3.5 / 4)
    assert metrics["quality/pairwise_acc"] == pytest.approx(3 / 4)
    assert metrics["quality/pairwise_ties"] == pytest.approx(1 / 4)
    assert metrics["quality/student_correct_rate"] == 0.5
    assert metrics["quality/teacher_correct_rate"] == 1.0
    # the two teacher answers (reward 1.0, correct) join the group: 8 pairs, 7 wins, 1 tie
    assert metrics["quality/pairwise_acc_with_teacher"] == pytest.approx(7 / 8)
    assert metrics["quality/auc_with_teacher"] == pytest.approx(7.5 / 8)


def test_the_answer_column_is_used_for_measurement_only():
    with ScriptedServer(handler) as server:
        with_column, measured = call(make_reward(server, rows()), rows(), answers=["42"])
        without, unmeasured = call(make_reward(server, rows()), rows())
        judge_prompts = [user_text(b) for b in server.requests if is_judge_request(b)]
    assert with_column == without == pytest.approx(REWARDS)
    assert measured["quality/auc"] == pytest.approx(3.5 / 4)
    assert not [name for name in unmeasured if name.startswith("quality/")]
    assert judge_prompts[0] == judge_prompts[1]  # the judge saw the same prompt either way


def test_a_wrong_reference_answer_shows_as_inverted_quality():
    with ScriptedServer(handler) as server:
        _, metrics = call(make_reward(server, rows("41")), rows("41"))
    # only "sure because ** 41" is right now: it ties with "42" and beats "no idea", loses to the first rollout
    assert metrics["quality/student_correct_rate"] == 0.25
    assert metrics["quality/teacher_correct_rate"] == 0.0
    assert metrics["quality/pairwise_acc"] == pytest.approx(1 / 3)
    assert metrics["quality/auc"] == pytest.approx(1.5 / 3)
