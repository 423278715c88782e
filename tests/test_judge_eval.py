"""Judging modes, the consensus criterion, and `ropd judge-eval` end to end, all over real HTTP against scripted servers."""

import asyncio
import json

import pytest

from ropd.cli import main
from ropd.config import PUBLISHED_JUDGE, JudgeConfig, RunConfig
from ropd.endpoints.cache import ResultCache
from ropd.evaluation.judge_eval import (
    Candidate,
    LabelledItem,
    LabelledSet,
    build_labelled_set,
    choose_candidates,
    parse_model_counts,
    save_labelled_set,
)
from ropd.reward.judge import JudgeTally, judge_verdicts, verdict_schema
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.rubrics import consensus_answer
from ropd.reward.teacher import TeacherPool
from ropd.testing.judge_scripts import (
    blocks,
    contains_rule,
    criteria_texts,
    is_judge_request,
    judge_reply,
    rubric_json,
    scripted_client,
    user_text,
)
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.types import PromptRow, Rubric

pytestmark = pytest.mark.timeout(60)

QUESTION = "What is 6 * 7?"
RUBRIC = Rubric.model_validate(
    {
        "criteria": [
            {"id": "c1", "text": "mentions 42", "points": 5},
            {"id": "c2", "text": "mentions because", "points": 2},
            {"id": "c3", "text": "mentions **", "points": 1},
        ]
    }
)
ANSWERS = ["It is 42 because **", "41", "42 **"]
EXPECTED = [[True, True, True], [False, False, False], [True, False, True]]


def judge(server, answers, **settings):
    """Verdicts from the published judge (the whole group in one call, no evidence fields) with `settings` changed."""
    client = scripted_client(server, "judge")
    tally = JudgeTally()
    cfg = JudgeConfig(**{**PUBLISHED_JUDGE, **settings})
    verdicts = asyncio.run(judge_verdicts(client, QUESTION, RUBRIC, answers, cfg, "s", tally=tally))
    return verdicts, tally


# --- modes ---------------------------------------------------------------------------------------------


def test_single_mode_makes_one_call_per_answer():
    with ScriptedServer(lambda body: judge_reply(body, contains_rule, final_answer="x")) as server:
        verdicts, _ = judge(server, ANSWERS, mode="single")
    assert [v.met for v in verdicts] == EXPECTED
    assert len(server.requests) == 3
    shown = sorted(next(iter(blocks(user_text(b), "ANSWER").values())) for b in server.requests)
    assert shown == sorted(ANSWERS)
    assert all(list(blocks(user_text(b), "ANSWER")) == ["1"] for b in server.requests)


def test_group_mode_makes_one_call():
    with ScriptedServer(lambda body: judge_reply(body, contains_rule)) as server:
        verdicts, _ = judge(server, ANSWERS)
    assert [v.met for v in verdicts] == EXPECTED
    assert len(server.requests) == 1


def sampled(flips: list[set[tuple[str, int]]], invalid: int | None = None):
    """A judge honouring n: sample i reports contains_rule, except that it flips (answer text, criterion) pairs in flips[i]."""

    def handler(body):
        answers, criteria = blocks(user_text(body), "ANSWER"), criteria_texts(body)
        replies = []
        for i in range(body.get("n", 1)):
            if i == invalid:
                replies.append('{"verdicts": [')
                continue
            verdicts = [
                {"answer": int(label), "met": [contains_rule(text, c) != ((text, j) in flips[i]) for j, c in enumerate(criteria)]}
                for label, text in answers.items()
            ]
            replies.append(json.dumps({"verdicts": verdicts}))
        return Reply(content=replies)

    return handler


def test_consistency_takes_the_per_criterion_majority_of_n_samples():
    flips = [{("41", 0), ("42 **", 1)}, {("41", 0), ("It is 42 because **", 2)}, {("42 **", 2)}]
    with ScriptedServer(sampled(flips)) as server:
        verdicts, tally = judge(server, ANSWERS, mode="consistency", consistency_samples=3)
    # ("41", c1) is flipped by two of three samples: the majority flips it; every other flip is outvoted
    assert [v.met for v in verdicts] == [[True, True, True], [True, False, False], [True, False, True]]
    assert verdicts[1].model_extra["votes"] == [2, 0, 0]
    assert (tally.samples, tally.valid_samples, tally.fallbacks) == (3, 3, 0)
    (body,) = server.requests
    assert body["n"] == 3
    assert body["response_format"]["json_schema"]["schema"] == verdict_schema(3, 3, answer=False)  # published: booleans only


def test_consistency_drops_incomplete_samples_and_a_tie_is_not_met():
    flips = [{("41", 0)}, set(), set()]
    with ScriptedServer(sampled(flips, invalid=2)) as server:
        verdicts, tally = judge(server, ANSWERS, mode="consistency", consistency_samples=3)
    assert [v.met for v in verdicts] == EXPECTED  # ("41", c1): one of two valid samples says met -> not met
    assert (tally.samples, tally.valid_samples) == (3, 2)


def test_consistency_falls_back_to_one_verdict_with_re_asks_when_no_sample_is_complete():
    def handler(body):
        if body.get("n", 1) > 1:
            return Reply(content=["nope", '{"verdicts": []}'])
        return judge_reply(body, contains_rule)

    with ScriptedServer(handler) as server:
        verdicts, tally = judge(server, ANSWERS, mode="consistency", consistency_samples=2)
    assert [v.met for v in verdicts] == EXPECTED
    assert (tally.samples, tally.valid_samples, tally.fallbacks) == (2, 0, 1)
    assert [b.get("n", 1) for b in server.requests] == [2, 1]


def test_expected_evidence_puts_both_final_answers_before_the_booleans():
    assert list(verdict_schema(2, 3, expected=True)["properties"]["verdicts"]["items"]["properties"]) == [
        "answer",
        "expected",
        "final_answer",
        "met",
    ]
    with ScriptedServer(lambda body: judge_reply(body, contains_rule)) as server:
        judge(server, ANSWERS, expected_evidence=True)
    body = server.requests[0]
    assert "Copy the final result the rubric requires" in body["messages"][0]["content"]
    assert '"expected": "<result the rubric requires>"' in user_text(body)
    assert list(body["response_format"]["json_schema"]["schema"]["properties"]["verdicts"]["items"]["properties"])[1] == "expected"


# --- the consensus criterion ----------------------------------------------------------------------------


def test_consensus_answer_is_a_strict_majority_of_equivalent_final_answers():
    assert consensus_answer(["so it is 42", "#### 42.0", "I get 41"]) == "42"
    assert consensus_answer(["The answer is 1/2", "0.5"]) == "1/2"
    assert consensus_answer(["42", "41"]) is None
    assert consensus_answer(["42", "41", "40"]) is None
    assert consensus_answer(["42", "", "<think>unfinished"]) is None  # answers without a final answer count against a majority
    assert consensus_answer(["7"]) == "7"
    assert consensus_answer([]) is None


def teacher_and_judge(teachers: list[str]):
    def handler(body):
        text = user_text(body)
        if is_judge_request(body):
            return judge_reply(body, contains_rule)
        if "<<<BEGIN REFERENCE" in text:
            return rubric_json([("mentions because", 2), ("mentions **", 1)])
        return Reply(content=teachers[: body.get("n", 1)])

    return handler


def score_group(teachers: list[str], rollouts: list[str]):
    judge = {"consensus_criterion": True, "consensus_points": 3, "min_criteria": 2, "score_teacher_answers": True}
    config = RunConfig.model_validate({"judge": judge})
    with ScriptedServer(teacher_and_judge(teachers)) as server:
        reward = RubricReward(
            config,
            TeacherPool(scripted_client(server, "teacher"), num_answers=len(teachers)),
            scripted_client(server, "rubricator"),
            scripted_client(server, "judge"),
            [PromptRow.model_validate({"id": "p", "prompt": [{"role": "user", "content": QUESTION}]})],
        )
        run = asyncio.run(reward.score_group(reward.prompts["p"], rollouts, step=0))
        judged_criteria = [criteria_texts(b) for b in server.requests if is_judge_request(b)]
    return run.score, judged_criteria


def test_agreeing_teachers_add_a_criterion_checked_by_code_not_the_judge():
    score, judged_criteria = score_group(["6*7 = 42 because", "It is **42**"], ["42 because", "41 because", "**42**"])
    assert [c.id for c in score.rubric.criteria] == ["c1", "c2", "consensus"]
    assert score.rubric.criteria[-1].points == 3 and "42" in score.rubric.criteria[-1].text
    assert judged_criteria == [["mentions because", "mentions **"]] * 2  # the judge never saw it (rollouts' call, teachers' call)
    assert score.verdicts == [[True, False, True], [True, False, False], [False, True, True]]
    assert score.rewards == pytest.approx([5 / 6, 2 / 6, 4 / 6])
    assert score.teacher_scores == pytest.approx([5 / 6, 4 / 6])  # teacher answers meet it too


def test_disagreeing_teachers_drop_the_consensus_criterion():
    score, _ = score_group(["It is 42 because", "It is 41 **"], ["42 because", "41 because"])
    assert [c.id for c in score.rubric.criteria] == ["c1", "c2"]
    assert score.rewards == pytest.approx([2 / 3, 2 / 3])


# --- the labelled set -------------------------------------------------------------------------------------


def test_model_counts_parse_with_defaults():
    assert parse_model_counts("a:4, b ,c:1", 2) == [("a", 4), ("b", 2), ("c", 1)]
    assert parse_model_counts("./models/x:y:3", 2) == [("./models/x:y", 3)]


def test_candidates_mix_right_and_wrong_answers_from_every_generator():
    labelled = [Candidate(source=f"m{i % 2}#{i}", text=f"t{i}", correct=i < 3) for i in range(8)]
    labelled.append(Candidate(source="m0#9", text="t0", correct=True))  # a duplicate text is kept once
    chosen = choose_candidates("p", labelled, 4)
    assert sorted(c.text for c in chosen if c.correct) == ["t0", "t1"]
    assert sorted(c.text for c in chosen if not c.correct) == ["t3", "t4"]
    assert chosen == choose_candidates("p", labelled, 4)
    assert len(choose_candidates("p", labelled[:4], 4)) == 4  # one wrong answer: three right ones fill up


ROWS = [
    PromptRow.model_validate(
        {"id": f"q{i}", "prompt": [{"role": "user", "content": f"Q{i}: what?"}], "answer": answer, "solution": f"#### {answer}"}
    )
    for i, answer in enumerate(["42", "7", "5"])
]
GENERATED = {"Q0": ["42", "41", "#### 42"], "Q1": ["1", "2", "3"], "Q2": ["5", "5.0", "$5"]}


def generator(body):
    question = user_text(body).split(":")[0]
    return Reply(content=GENERATED[question][: body.get("n", 1)])


def test_labelled_set_labels_by_the_reference_and_drops_one_class_items(tmp_path):
    with ScriptedServer(generator) as server, ResultCache(tmp_path / "c.sqlite") as cache:
        urls = {"gen": server.base_url}
        labelled = build_labelled_set("rows", ROWS, [("gen", 3)], ("reference", 1), cache, base_urls=urls)
        again = build_labelled_set("rows", ROWS, [("gen", 3)], ("reference", 1), cache, base_urls=urls)
        with_teacher = build_labelled_set("rows", ROWS, [("gen", 3)], ("gen", 2), cache, base_urls=urls)
    assert (labelled.examined, labelled.dropped_no_correct, labelled.dropped_no_incorrect) == (3, 1, 1)
    (item,) = labelled.items
    assert {(c.text, c.correct) for c in item.candidates} == {("42", True), ("41", False), ("#### 42", True)}
    assert item.teacher_answers == ["#### 42"]
    assert again == labelled and len(server.requests) == 3 + 3  # answers once; the teacher's samples are other samples
    assert with_teacher.items[0].teacher_answers == ["42", "41"]
    assert server.requests[-1]["seed"] != server.requests[0]["seed"]


# --- ropd judge-eval end to end ---------------------------------------------------------------------------


def labelled_file(tmp_path):
    def item(i: int, texts: list[tuple[str, bool]]) -> LabelledItem:
        return LabelledItem(
            id=f"i{i}",
            question=f"Question {i}: what is 6*7?",
            answer="42",
            teacher_answers=["It is 42 because **", "42 because"],
            candidates=[Candidate(source=f"m#{j}", text=t, correct=ok) for j, (t, ok) in enumerate(texts)],
        )

    items = [
        item(0, [("42 because **", True), ("41 because", False), ("40", False)]),  # 8/8, 2/8, 0 -> 2 wins
        item(1, [("42", True), ("because ** 41", False), ("0", False)]),  # 5/8, 3/8, 0 -> 2 wins
        item(2, [("The answer: 42", True), ("41 because **", False), ("42?? no: 24", False)]),  # 5, 3, 5 -> win, tie
    ]
    labelled = LabelledSet(
        dataset="t", teacher="reference", generators=["m:3"], examined=4, dropped_no_correct=1, dropped_no_incorrect=0, items=items
    )
    path = tmp_path / "set.json"
    save_labelled_set(labelled, path)
    return path


def scripted_judge(body):
    if is_judge_request(body):
        if body.get("n", 1) > 1:
            return Reply(content=[judge_reply(body, contains_rule)] * body["n"])
        return judge_reply(body, contains_rule)
    return rubric_json([("mentions 42", 5), ("mentions because", 2), ("mentions **", 1)])


def run_cli(tmp_path, server, capsys, *extra):
    judge = ["--judge", "scripted", "--judge-base-url", server.base_url, "--judge-min-criteria", "3"]
    modes = ["--mode", "group,single,consistency"]
    code = main(
        ["judge-eval", "--labelled", str(labelled_file(tmp_path)), *judge, *modes, "--cache", str(tmp_path / "cache.sqlite"), *extra]
    )
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_judge_eval_end_to_end_and_a_rerun_is_free(tmp_path, capsys):
    with ScriptedServer(scripted_judge) as server:
        code, report, table = run_cli(tmp_path, server, capsys, "--output", str(tmp_path / "out.json"))
        requests = len(server.requests)
        code_again, again, _ = run_cli(tmp_path, server, capsys)
    assert code == code_again == 0
    assert requests == 3 + 3 + 9 + 3  # rubrics once (shared by the modes); group 1, single 3, consistency 1 call per item
    assert len(server.requests) == requests
    assert again["results"] == report["results"]
    assert json.loads((tmp_path / "out.json").read_text())["results"] == report["results"]
    assert report["labelled"] == {
        "items": 3,
        "examined": 4,
        "dropped_no_correct": 1,
        "dropped_no_incorrect": 0,
        "answers": 9,
        "correct_answers": 3,
    }
    rows = {(r["mode"], r["consensus"]): r for r in report["results"]}
    assert set(rows) == {(m, c) for m in ("group", "single", "consistency") for c in (False, True)}
    for mode in ("group", "single", "consistency"):
        plain = rows[(mode, False)]
        assert plain["pairwise_acc"] == pytest.approx(5 / 6) and plain["pairwise_ties"] == pytest.approx(1 / 6)
        # pooled: correct 8/8, 5/8, 5/8 vs wrong 2, 0, 3, 0, 3, 5 (eighths): 6 + 5.5 + 5.5 of 18
        assert plain["auc"] == pytest.approx(17 / 18)
        assert plain["validity"] == 1.0 and plain["items"] == 3 and plain["failed_items"] == 0
        # teachers agree on 42: the code-checked criterion separates the tied pair too
        assert rows[(mode, True)]["pairwise_acc"] == 1.0 and rows[(mode, True)]["consensus_items"] == 3
    assert [rows[(m, False)]["calls"] for m in ("group", "single", "consistency")] == [3, 9, 3]
    assert "judge-eval" in table and "0.833" in table


def test_judge_eval_without_a_dataset_or_with_a_bad_mode_exits_2(tmp_path, capsys):
    assert main(["judge-eval", "--judge", "x", "--judge-base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert (
        main(
            [
                "judge-eval",
                "--labelled",
                str(labelled_file(tmp_path)),
                "--judge",
                "x",
                "--mode",
                "group,best",
                "--cache",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "best" in capsys.readouterr().err


def test_judge_eval_a_broken_labelled_file_names_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "dataset": "t",
                "teacher": "r",
                "generators": [],
                "examined": 1,
                "dropped_no_correct": 0,
                "dropped_no_incorrect": 0,
                "items": [{"id": "x"}],
            }
        )
    )
    assert main(["judge-eval", "--labelled", str(bad), "--judge", "x", "--cache", str(tmp_path / "c.sqlite")]) == 2
    assert "items.0.question" in capsys.readouterr().err


def targeted_judge(body):
    """The scripted judge of `scripted_judge`, with a rubricator that gives "mentions 42" the target 42."""
    if is_judge_request(body):
        return judge_reply(body, contains_rule)
    items = [("mentions 42", 5, "42"), ("mentions because", 2, ""), ("mentions **", 1, "")]
    return json.dumps({"criteria": [{"id": f"c{i}", "text": t, "points": p, "target": g} for i, (t, p, g) in enumerate(items, 1)]})


def test_judge_eval_reports_each_code_check_from_the_same_verdicts(tmp_path, capsys):
    checks = ["--judge-verifiable-criteria", "--judge-expected-evidence", "--judge-evidence-check", "--no-judge-consensus-criterion"]
    flags = [*checks, "--judge-min-criteria", "3"]
    with ScriptedServer(targeted_judge) as server:
        judge = ["--judge", "scripted", "--judge-base-url", server.base_url, "--mode", "group", *flags]
        cache = ["--cache", str(tmp_path / "cache.sqlite")]
        code = main(["judge-eval", "--labelled", str(labelled_file(tmp_path)), *judge, *cache])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert len(server.requests) == 3 + 3  # one rubric and one judge call per item, whatever rows are reported
    report = json.loads(captured.out)
    rows = {(r["targets"], r["evidence_check"], r["consensus"]): r for r in report["results"]}
    assert len(report["results"]) == len(rows) == 8
    assert [key for key, r in rows.items() if r["as_configured"]] == [(True, True, False)]
    judge_only, with_targets = rows[(False, False, False)], rows[(True, False, False)]
    # the judge alone ties "The answer: 42" with "42?? no: 24" (it mentions 42); the target checks the final answer, 24
    assert judge_only["pairwise_acc"] == pytest.approx(5 / 6) and judge_only["target_criteria"] == 0
    assert with_targets["pairwise_acc"] == 1.0 and with_targets["target_criteria"] == 1 and with_targets["dropped_targets"] == 0
    assert rows[(False, True, False)]["evidence_criteria"] == 0  # the scripted judge copies no results: nothing to compare
    item = next(i for i in report["items"] if i["id"] == "i2")
    assert item["rewards"]["group"] == pytest.approx([5 / 8, 3 / 8, 0.0])  # what training computes with these settings
    assert "T+E*" in captured.err
