"""The rubric reward as TRL calls it: regrouping, concurrency, None for failed groups, rubric reuse, logged metrics."""

import asyncio
import json
import threading
from types import SimpleNamespace

import pytest

from ropd.config import PUBLISHED_JUDGE, RunConfig
from ropd.reward.groups import group_indices
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.teacher import TeacherPool
from ropd.testing.judge_scripts import blocks, contains_rule, is_judge_request, judge_reply, rubric_json, scripted_client, user_text
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.types import PromptRow

pytestmark = pytest.mark.timeout(60)

CRITERIA = [("mentions 42", 5), ("mentions because", 2), ("mentions **", 1), ("mentions sure", 2)]
TEACHER_ANSWER = "<think>6*7</think>sure: it is 42 because 6*7=42. **42**"
PROMPTS = {
    pid: PromptRow.model_validate({"id": pid, "prompt": [{"role": "user", "content": f"Question {pid}: what is 6*7?"}]})
    for pid in ("p1", "p2", "p3")
}


def handler(fail: dict[str, str] | None = None):
    """Teacher, rubricator and judge in one server; `fail` maps a prompt id to the role that breaks for it."""
    fail = fail or {}

    def respond(body):
        text = user_text(body)
        broken = next((role for pid, role in fail.items() if f"Question {pid}:" in text), None)
        if is_judge_request(body):
            return '{"verdicts": []}' if broken == "judge" else judge_reply(body, contains_rule, final_answer="42")
        if "<<<BEGIN REFERENCE" in text:
            return rubric_json(CRITERIA[:2]) if broken == "rubric" else rubric_json(CRITERIA)
        return Reply(status=400) if broken == "teacher" else TEACHER_ANSWER

    return respond


def make_reward(server, refresh="step", num_generations=4, score_teacher=True, training=None) -> RubricReward:
    """The reward with the published judge: each group (and its teacher answers) in one call, the judge's booleans only."""
    config = RunConfig.model_validate(
        {
            "judge": {**PUBLISHED_JUDGE, "rubric_refresh": refresh, "score_teacher_answers": score_teacher},
            "training": {"num_generations": num_generations, **(training or {})},
        }
    )
    teacher = TeacherPool(scripted_client(server, "teacher"), num_answers=2)
    return RubricReward(config, teacher, scripted_client(server, "rubricator"), scripted_client(server, "judge"), PROMPTS)


def call(reward, ids, texts, step=0, conversational=True, completion_ids=None):
    metrics: dict[str, float] = {}
    extra: dict[str, list] = {}
    prompts = [[m.model_dump() for m in PROMPTS[i].prompt] for i in ids]
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    rewards = asyncio.run(
        reward(
            prompts=prompts,
            completions=completions,
            completion_ids=completion_ids or [[1, 2]] * len(texts),
            id=ids,
            answer=["42"] * len(ids),
            trainer_state=SimpleNamespace(global_step=step),
            log_metric=metrics.__setitem__,
            log_extra=extra.__setitem__,
        )
    )
    return rewards, metrics, extra


ROLLOUTS = ["It is 42 because **", "41", "sure, 42", "no idea"]
EXPECTED = [8 / 10, 0.0, 7 / 10, 0.0]


def test_trl_sees_an_async_reward_named_rubric():
    from trl.trainer.utils import get_callable_name, is_async_callable

    reward = RubricReward(RunConfig(), None, None, None, PROMPTS)  # type: ignore[arg-type]
    assert is_async_callable(reward)
    assert get_callable_name(reward) == "rubric"


def test_a_batch_of_groups_is_scored_concurrently_with_rewards_in_rollout_order():
    with ScriptedServer(handler(), latency=0.3) as server:
        reward = make_reward(server)
        rewards, metrics, extra = call(reward, ["p1"] * 4 + ["p2"] * 4, ROLLOUTS + ROLLOUTS[::-1])
    assert rewards == pytest.approx(EXPECTED + EXPECTED[::-1])
    assert server.max_in_flight >= 2  # the two groups' calls overlapped
    rubric_calls = [b for b in server.requests if "<<<BEGIN REFERENCE" in user_text(b)]
    judge_calls = [b for b in server.requests if is_judge_request(b)]
    assert len(rubric_calls) == 2 and len(judge_calls) == 4
    shown = [set(blocks(user_text(b), "ANSWER").values()) for b in judge_calls]
    # the rollouts' call holds the 4 rollouts only; the teacher answers (scored here) get a call of their own
    assert sorted(len(s) for s in shown) == [1, 1, 4, 4]  # the two teacher answers are the same text: one distinct block
    assert sorted(len(blocks(user_text(b), "ANSWER")) for b in judge_calls) == [2, 2, 4, 4]
    assert all(s == set(ROLLOUTS) or s == {TEACHER_ANSWER.split("</think>")[1]} for s in shown)
    scores = {s.prompt_id: s for s in reward.last_group_scores}
    assert scores["p1"].teacher_scores == [1.0, 1.0]
    assert scores["p2"].rewards == pytest.approx(EXPECTED[::-1])
    assert metrics["rubric/reward_mean"] == pytest.approx(sum(EXPECTED) / 4)
    assert metrics["rubric/group_failure_rate"] == 0.0
    assert metrics["rubric/teacher_score_mean"] == 1.0
    assert metrics["rubric/student_beats_weakest_teacher_rate"] == 0.0
    assert metrics["rubric/criteria"] == 4
    assert metrics["judge/requests"] == 4 and metrics["rubricator/tokens"] == 40 and metrics["teacher/requests"] >= 2
    assert metrics["rubric/cache_hit_rate"] == 0.0
    assert {"time/teacher", "time/rubric", "time/judge"} <= metrics.keys()
    assert 0.3 <= metrics["time/judge"] < 3
    assert extra["judge_final_answer"] == ["42"] * 8


def test_a_group_that_fails_gets_none_for_every_rollout_and_is_counted():
    for role in ("teacher", "rubric", "judge"):
        with ScriptedServer(handler(fail={"p2": role})) as server:
            rewards, metrics, _ = call(make_reward(server), ["p1"] * 4 + ["p2"] * 4 + ["p3"] * 4, ROLLOUTS * 3)
        assert rewards[:4] == pytest.approx(EXPECTED) and rewards[8:] == pytest.approx(EXPECTED)
        assert rewards[4:8] == [None] * 4, role
        assert metrics["rubric/group_failure_rate"] == pytest.approx(1 / 3)
        assert metrics[f"rubric/{role}_failure_rate"] == pytest.approx(1 / 3)
        assert metrics["rubric/reward_mean"] == pytest.approx(sum(EXPECTED) / 4)


def test_failure_is_recorded_on_the_group_score():
    with ScriptedServer(handler(fail={"p1": "judge"})) as server:
        reward = make_reward(server)
        call(reward, ["p1"] * 4, ROLLOUTS)
    (score,) = reward.last_group_scores
    assert score.failed and score.error.startswith("judge: ") and "JudgeOutput" in score.error


def test_split_and_interleaved_groups_are_regrouped_by_prompt_id():
    ids = ["p2", "p1", "p2", "p1", "p2"]
    texts = ["41", "It is 42 because **", "sure, 42", "no idea", "It is 42 because **"]
    with ScriptedServer(handler()) as server:
        rewards, metrics, _ = call(make_reward(server), ids, texts, conversational=False)
    assert rewards == pytest.approx([0.0, 0.8, 0.7, 0.0, 0.8])
    judged = sorted(len(blocks(user_text(b), "ANSWER")) for b in server.requests if is_judge_request(b))
    assert judged == [2, 2, 2, 3]  # each group's rollouts, and each group's two teacher answers apart
    assert metrics["rubric/partial_group_rate"] == 1.0  # both groups hold fewer than num_generations=4 rollouts here


def test_rubric_reuse_per_prompt_skips_the_rubricator_on_later_steps():
    with ScriptedServer(handler()) as server:
        reward = make_reward(server, refresh="prompt")
        call(reward, ["p1"] * 4, ROLLOUTS, step=0)
        _, metrics, _ = call(reward, ["p1"] * 4, ["a", "b", "c", "42"], step=1)
        assert metrics["rubric/reuse_rate"] == 1.0
        assert sum("<<<BEGIN REFERENCE" in user_text(b) for b in server.requests) == 1
        reward_per_step = make_reward(server, refresh="step")
        call(reward_per_step, ["p1"] * 4, ROLLOUTS, step=0)
        call(reward_per_step, ["p1"] * 4, ["a", "b", "c", "42"], step=1)
        assert sum("<<<BEGIN REFERENCE" in user_text(b) for b in server.requests) == 3


def test_student_beating_the_weakest_teacher_is_counted():
    weak_teacher = iter(["It is 42 because **42**", "no clue"])
    lock = threading.Lock()
    base = handler()

    def respond(body):
        text = user_text(body)
        if "<<<BEGIN" not in text:
            with lock:
                return Reply(content=[next(weak_teacher), next(weak_teacher)])
        return base(body)

    with ScriptedServer(respond) as server:
        _, metrics, _ = call(make_reward(server), ["p1"] * 4, ROLLOUTS)
    assert metrics["rubric/student_beats_weakest_teacher_rate"] == 1.0
    assert metrics["rubric/teacher_score_mean"] == pytest.approx((0.8 + 0.0) / 2)


def test_teacher_answers_are_not_judged_when_scoring_them_is_off():
    with ScriptedServer(handler()) as server:
        reward = make_reward(server, score_teacher=False)
        rewards, metrics, _ = call(reward, ["p1"] * 4, ROLLOUTS)
    assert rewards == pytest.approx(EXPECTED)
    assert [len(blocks(user_text(b), "ANSWER")) for b in server.requests if is_judge_request(b)] == [4]
    assert "rubric/teacher_score_mean" not in metrics


def test_group_indices_keep_first_appearance_order():
    assert group_indices(["b", "a", "b", "c", "a"]) == {"b": [0, 2], "a": [1, 4], "c": [3]}


def test_prompts_without_an_id_column_are_grouped_by_their_messages():
    with ScriptedServer(handler()) as server:
        reward = make_reward(server)
        prompts = [[{"role": "user", "content": "Question q9: what is 6*7?"}]] * 2
        rewards = asyncio.run(reward(prompts=prompts, completions=["42", "41"], completion_ids=None))
    assert rewards == pytest.approx([0.5, 0.0])
    assert len(reward.last_group_scores) == 1
    assert json.loads(json.dumps(reward.last_group_scores[0].model_dump()))["prompt_id"]


def test_build_rubric_reward_wires_clients_from_config_and_never_pays_twice(tmp_path):
    from ropd.endpoints.cache import ResultCache
    from ropd.reward.setup import build_rubric_reward

    with ScriptedServer(handler()) as server:
        config = RunConfig.model_validate(
            {
                "teacher": {"model": "scripted-teacher", "num_answers": 2},
                "judge": {**PUBLISHED_JUDGE, "model": "scripted-judge"},
                "output": {"dir": str(tmp_path)},
            }
        )
        urls = {"teacher_base_url": server.base_url, "judge_base_url": server.base_url}
        with ResultCache(tmp_path / "cache.sqlite") as cache:
            reward = build_rubric_reward(config, list(PROMPTS.values()), cache, **urls)
            first, _, _ = call(reward, ["p1"] * 4, ROLLOUTS)
        assert {b["model"] for b in server.requests} == {"scripted-teacher", "scripted-judge"}
        assert next(b for b in server.requests if is_judge_request(b))["temperature"] == 0.0
        paid = len(server.requests)
        with ResultCache(tmp_path / "cache.sqlite") as cache:
            again = build_rubric_reward(config, PROMPTS, cache, **urls)
            second, metrics, _ = call(again, ["p1"] * 4, ROLLOUTS)
        assert len(server.requests) == paid  # teacher answers, rubric and verdicts all came from the cache
    assert first == second == pytest.approx(EXPECTED)
    assert metrics["rubric/cache_hit_rate"] == 1.0
    assert set(again.usage_by_role()) == {"teacher", "rubricator", "judge"}


def test_teacher_answers_with_unfinished_reasoning_fail_the_group_loudly(caplog):
    base = handler()

    def respond(body):
        return base(body) if "<<<BEGIN" in user_text(body) else "<think>still thinking when max_tokens hit"

    with ScriptedServer(respond) as server, caplog.at_level("WARNING", logger="ropd.reward.rubric_reward"):
        reward = make_reward(server)
        rewards, metrics, _ = call(reward, ["p1"] * 4, ROLLOUTS)
    assert rewards == [None] * 4
    assert metrics["rubric/teacher_failure_rate"] == 1.0
    assert "no usable teacher answer for prompt 'p1'" in reward.last_group_scores[0].error
    assert "prompt 'p1': no reward for its 4 rollouts" in caplog.text
    assert not any("<<<BEGIN" in user_text(b) for b in server.requests)  # no rubric or judge call was paid for


def test_an_empty_batch_gets_no_rewards():
    reward = RubricReward(RunConfig(), None, None, None, PROMPTS)  # type: ignore[arg-type]
    assert asyncio.run(reward(prompts=[], completions=[], completion_ids=[])) == []


# --- teacher answers in calls of their own; verifiable targets and the evidence check in training ---------------


def judged_texts(server) -> list[set[str]]:
    return [set(blocks(user_text(b), "ANSWER").values()) for b in server.requests if is_judge_request(b)]


def test_teacher_answers_are_not_in_the_rollouts_judge_call_by_default():
    assert RunConfig().judge.score_teacher_answers == "off"
    with ScriptedServer(handler()) as server:
        config = RunConfig.model_validate({"training": {"num_generations": 4}})
        teacher = TeacherPool(scripted_client(server, "teacher"), num_answers=2)
        reward = RubricReward(config, teacher, scripted_client(server, "rubricator"), scripted_client(server, "judge"), PROMPTS)
        rewards, metrics, _ = call(reward, ["p1"] * 4, ROLLOUTS)
    # by default the teachers' agreed final answer (42) adds the consensus criterion (5 points) to the judged 10
    assert reward.last_group_scores[0].decided_by == ["judge"] * 4 + ["consensus"]
    assert rewards == pytest.approx([13 / 15, 0.0, 12 / 15, 0.0])
    assert judged_texts(server) == [set(ROLLOUTS)]
    assert not any("sure: it is 42" in user_text(b) for b in server.requests if is_judge_request(b))
    assert reward.last_group_scores[0].teacher_scores == []
    assert "rubric/teacher_score_mean" not in metrics


def two_teacher_answers():
    """handler(), except that the teacher gives two different answers, once."""
    answers = iter(["The answer is 42 because **", "sure, 42 because"])
    lock = threading.Lock()
    base = handler()

    def respond(body):
        if "<<<BEGIN" not in user_text(body):
            with lock:
                return Reply(content=[next(answers), next(answers)])
        return base(body)

    return respond


def test_scored_teacher_answers_get_judge_calls_of_their_own_and_chunk_size_applies_to_both():
    with ScriptedServer(two_teacher_answers()) as server:
        judge = {**PUBLISHED_JUDGE, "score_teacher_answers": True, "chunk_size": 2}
        config = RunConfig.model_validate({"judge": judge, "training": {"num_generations": 4}})
        teacher = TeacherPool(scripted_client(server, "teacher"), num_answers=2)
        reward = RubricReward(config, teacher, scripted_client(server, "rubricator"), scripted_client(server, "judge"), PROMPTS)
        rewards, _, _ = call(reward, ["p1"] * 4, ROLLOUTS)
    shown = judged_texts(server)
    teacher_texts = {"The answer is 42 because **", "sure, 42 because"}
    assert sorted(len(s) for s in shown) == [2, 2, 2]
    assert sum(s == teacher_texts for s in shown) == 1  # one call holds both teacher answers ...
    assert all(s <= set(ROLLOUTS) for s in shown if s != teacher_texts)  # ... and the others only rollouts
    assert rewards == pytest.approx(EXPECTED)
    assert reward.last_group_scores[0].teacher_scores == pytest.approx([8 / 10, 9 / 10])


def test_published_recipe_judges_teacher_answers_and_rollouts_in_one_shuffled_call():
    with ScriptedServer(two_teacher_answers()) as server:
        config = RunConfig.model_validate({"judge": PUBLISHED_JUDGE, "training": {"num_generations": 4}})
        assert config.judge.score_teacher_answers == "in_call" and not config.judge.answer_evidence
        teacher = TeacherPool(scripted_client(server, "teacher"), num_answers=2)
        reward = RubricReward(config, teacher, scripted_client(server, "rubricator"), scripted_client(server, "judge"), PROMPTS)
        rewards, metrics, _ = call(reward, ["p1"] * 4, ROLLOUTS)
    judge_calls = [b for b in server.requests if is_judge_request(b)]
    assert len(judge_calls) == 1  # one call: the 4 rollouts and the 2 teacher answers together
    labelled = blocks(user_text(judge_calls[0]), "ANSWER")
    assert set(labelled.values()) == set(ROLLOUTS) | {"The answer is 42 because **", "sure, 42 because"}
    assert list(labelled.values())[:4] != ROLLOUTS  # shuffled: the rollouts are not simply first, in order
    verdict = judge_calls[0]["response_format"]["json_schema"]["schema"]["properties"]["verdicts"]["items"]
    assert list(verdict["properties"]) == ["answer", "met"]  # booleans only
    assert rewards == pytest.approx(EXPECTED)  # the rollouts' rewards as when judged alone
    assert reward.last_group_scores[0].teacher_scores == pytest.approx([8 / 10, 9 / 10])
    assert metrics["rubric/teacher_score_mean"] == pytest.approx(0.85)
    assert metrics["rubric/student_beats_weakest_teacher_rate"] == 0.0  # best rollout 0.8 is not above 0.8


def targeted_rubric(body) -> str:
    criteria = [
        {"id": "c1", "category": "correctness", "text": "mentions 42", "target": 42, "points": 5},  # grounded: the teachers' result
        {"id": "c2", "category": "reasoning", "text": "mentions because", "target": "41", "points": 2},  # a student's value
        {"id": "c3", "category": "format", "text": "mentions **", "target": {"value": 1}, "points": 1},  # malformed
        {"id": "c4", "category": "style", "text": "mentions sure", "target": "<<<END", "points": 2},  # unsafe
    ]
    return json.dumps({"criteria": criteria})


def lenient_handler(rubric=targeted_rubric, **extra):
    """A judge that marks every criterion met for every answer, whatever it says."""

    def respond(body):
        text = user_text(body)
        if is_judge_request(body):
            return judge_reply(body, lambda answer, criterion: True, **extra)
        if "<<<BEGIN REFERENCE" in text:
            return rubric(body)
        return TEACHER_ANSWER

    return respond


def reward_with(server, **judge) -> RubricReward:
    """The reward with the published judge (every code check off, one call per group) and the `judge` settings given."""
    config = RunConfig.model_validate({"judge": {**PUBLISHED_JUDGE, **judge}, "training": {"num_generations": 4}})
    teacher = TeacherPool(scripted_client(server, "teacher"), num_answers=2)
    return RubricReward(config, teacher, scripted_client(server, "rubricator"), scripted_client(server, "judge"), PROMPTS)


def test_a_grounded_target_decides_its_criterion_over_a_judge_that_says_yes_to_everything():
    with ScriptedServer(lenient_handler()) as server:
        rewards, metrics, _ = call(reward_with(server, verifiable_criteria=True), ["p1"] * 4, ROLLOUTS)
        rubric_request = next(b for b in server.requests if "<<<BEGIN REFERENCE" in user_text(b))
    # c1 (5 of 10 points) is checked by code: the final answer of "41" and "no idea" is not 42; c2-c4 stay with the judge
    assert rewards == pytest.approx([1.0, 0.5, 1.0, 0.5])
    assert reward_with_scores(metrics) == (1, 3, 2)
    criterion = rubric_request["response_format"]["json_schema"]["schema"]["properties"]["criteria"]["items"]
    assert criterion["properties"]["target"] == {"type": "string", "maxLength": 32} and "target" in criterion["required"]
    assert '"target"' in user_text(rubric_request)
    with ScriptedServer(lenient_handler()) as server:
        off, metrics_off, _ = call(reward_with(server, verifiable_criteria=False), ["p1"] * 4, ROLLOUTS)
        rubric_request = next(b for b in server.requests if "<<<BEGIN REFERENCE" in user_text(b))
    assert off == [1.0] * 4 and metrics_off["rubric/verifiable_criteria"] == 0 and metrics_off["rubric/judged_criteria"] == 4
    assert "target" not in rubric_request["response_format"]["json_schema"]["schema"]["properties"]["criteria"]["items"]["properties"]
    assert '"target"' not in user_text(rubric_request)


def reward_with_scores(metrics) -> tuple[float, float, float]:
    return metrics["rubric/verifiable_criteria"], metrics["rubric/judged_criteria"], metrics["rubric/dropped_targets"]


def test_evidence_check_in_training_compares_the_judges_copies_in_code():
    def copying_judge(body):
        answers = blocks(user_text(body), "ANSWER")
        numbers = {label: ([w for w in text.replace(",", " ").split() if w.isdigit()] or ["none"])[-1] for label, text in answers.items()}
        verdicts = [{"answer": int(label), "expected": "42", "final_answer": numbers[label], "met": [True] * 4} for label in answers]
        return json.dumps({"verdicts": verdicts})

    def respond(body):
        if is_judge_request(body):
            return copying_judge(body)
        return rubric_json(CRITERIA) if "<<<BEGIN REFERENCE" in user_text(body) else TEACHER_ANSWER

    with ScriptedServer(respond) as server:
        rewards, metrics, _ = call(reward_with(server, expected_evidence=True, evidence_check=True), ["p1"] * 4, ROLLOUTS)
        judge_request = next(b for b in server.requests if is_judge_request(b))
    assert "expected" in judge_request["response_format"]["json_schema"]["schema"]["properties"]["verdicts"]["items"]["properties"]
    # "mentions 42" names the copied required result, so the copies decide it: "41" and "no idea" (copied "none") lose it
    assert rewards == pytest.approx([1.0, 0.5, 1.0, 0.5])
    assert metrics["rubric/evidence_criteria"] == 1 and metrics["rubric/judged_criteria"] == 3


@pytest.mark.parametrize("truncated_reward", [None, 0.0, -0.5])
def test_a_rollout_cut_off_at_the_length_limit_gets_truncated_reward_when_set(tmp_path, truncated_reward):
    training = {"max_completion_length": 3, "truncated_reward": truncated_reward}
    cut_off = [[1, 2, 3], [1, 2], [1, 2, 3, 4], [1]]  # the first and third reached the 3-token limit
    with ScriptedServer(handler()) as server:
        reward = make_reward(server, score_teacher=False, training=training)
        reward.groups_log = tmp_path / "groups.jsonl"
        rewards, metrics, _ = call(reward, ["p1"] * 4, ROLLOUTS, completion_ids=cut_off)
    judged = EXPECTED if truncated_reward is None else [truncated_reward, EXPECTED[1], truncated_reward, EXPECTED[3]]
    assert rewards == pytest.approx(judged)
    assert metrics["rubric/truncated_rate"] == 0.5
    assert metrics["rubric/reward_mean"] == pytest.approx(sum(judged) / 4)
    record = json.loads(reward.groups_log.read_text())
    assert record["truncated"] == [True, False, True, False] and record["rewards"] == pytest.approx(judged)


def test_cut_off_means_no_end_token_as_trl_counts_it_not_the_length_alone(tmp_path):
    # End token 2: the first ends with it exactly at the 3-token limit (finished), the second reached the limit without
    # it, the third stopped short of the limit without it (as a tool rollout whose tool output would not fit), the last
    # ended with it early.
    completion_ids = [[5, 6, 2], [5, 6, 7], [5, 6], [5, 2]]
    with ScriptedServer(handler()) as server:
        reward = make_reward(server, score_teacher=False, training={"max_completion_length": 3, "truncated_reward": -1.0})
        reward.end_token_ids = {2, 0}
        reward.groups_log = tmp_path / "groups.jsonl"
        rewards, metrics, _ = call(reward, ["p1"] * 4, ROLLOUTS, completion_ids=completion_ids)
    assert json.loads(reward.groups_log.read_text())["truncated"] == [False, True, True, False]
    assert rewards == pytest.approx([EXPECTED[0], -1.0, -1.0, EXPECTED[3]])
    assert metrics["rubric/truncated_rate"] == 0.5


def test_a_tool_rollout_that_ends_on_an_unanswered_tool_call_counts_as_unanswered():
    call_python = {"type": "function", "function": {"name": "python", "arguments": {"code": "print(6*7)"}}}
    answered = [
        {"role": "assistant", "content": "", "tool_calls": [call_python]},
        {"role": "tool", "name": "python", "content": "42"},
        {"role": "assistant", "content": "It is 42 because 6*7 = 42. **42**"},
    ]
    pending = [*answered[:2], {"role": "assistant", "content": "It is 42 because", "tool_calls": [call_python]}]
    with ScriptedServer(handler()) as server:
        reward = make_reward(server, num_generations=2, score_teacher=False, training={"truncated_reward": 0.0})
        reward.end_token_ids = {2}
        prompts = [[m.model_dump() for m in PROMPTS["p1"].prompt]] * 2
        rewards = asyncio.run(reward(prompts=prompts, completions=[answered, pending], completion_ids=[[7, 2], [7, 2]], id=["p1"] * 2))
    assert reward.last_runs[0].truncated == [False, True]  # both ended with the end token; the second never got its output
    assert rewards[1] == 0.0 and rewards[0] > 0.0
