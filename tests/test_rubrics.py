"""Rubric induction over real HTTP: schema, re-asks on invalid rubrics, template swap, cache keys, reuse policy, CLI."""

import asyncio
import json

import pytest

from ropd.cli import main
from ropd.config import JudgeConfig
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.llm import LLMError
from ropd.reward.prompts import PROMPTS_DIR
from ropd.reward.rubrics import RubricStore, induce_rubric
from ropd.testing.judge_scripts import blocks, rubric_json, scripted_client, sequence, user_text
from ropd.testing.scripted_server import Reply, ScriptedServer

pytestmark = pytest.mark.timeout(60)

QUESTION = "Tom has 3 boxes of 4 apples. How many apples?"
TEACHER = ["<think>3 boxes times 4</think>3 x 4 = 12 apples.", "He has 12 apples."]
STUDENTS = ["3 + 4 = 7 apples.", "<think>multiply?</think>12", "I don't know."]
GOOD = [("The final answer is 12", 5), ("Multiplies 3 by 4", 3), ("States the unit apples", 1), ("Does not add 3 and 4", 2)]


def induce(server, cfg=None, cache=None, **kwargs):
    client = scripted_client(server, "rubricator", cache=cache, **kwargs)
    return asyncio.run(induce_rubric(client, QUESTION, TEACHER, STUDENTS, cfg or JudgeConfig())), client


def test_rubric_request_carries_the_answers_and_a_bounded_schema():
    with ScriptedServer(sequence(rubric_json(GOOD))) as server:
        rubric, client = induce(server)
    assert [c.text for c in rubric.criteria] == [t for t, _ in GOOD]
    assert rubric.total_points == 11
    body = server.requests[0]
    prompt = user_text(body)
    assert blocks(prompt, "REFERENCE") == {"A": "3 x 4 = 12 apples.", "B": "He has 12 apples."}
    assert blocks(prompt, "STUDENT") == {"1": "3 + 4 = 7 apples.", "2": "12", "3": "I don't know."}
    schema = body["response_format"]["json_schema"]["schema"]["properties"]["criteria"]
    assert (schema["minItems"], schema["maxItems"]) == (4, 12)
    assert (schema["items"]["properties"]["points"]["minimum"], schema["items"]["properties"]["points"]["maximum"]) == (1, 5)
    assert client.usage.requests == 1


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ("Sure! Here is a rubric: criteria are correctness and clarity.", "JSON"),
        (rubric_json(GOOD[:2]), "between 4 and 12"),
        (json.dumps({"criteria": [{"id": "c1", "text": t, "points": p, "category": ""} for t, p in GOOD]}), "duplicate criterion ids: c1"),
        (rubric_json([(t, 9 if i == 0 else p) for i, (t, p) in enumerate(GOOD)]), "c1 have points outside 1..5"),
        (rubric_json([*GOOD[:3], ("the FINAL answer is  12", 2)]), "repeat the same text"),
    ],
    ids=["prose", "too-few", "duplicate-ids", "points-out-of-range", "repeated-criterion"],
)
def test_invalid_rubric_is_re_asked_with_the_error_then_accepted(bad, complaint):
    with ScriptedServer(sequence(bad, rubric_json(GOOD))) as server:
        rubric, client = induce(server)
    assert len(rubric.criteria) == 4
    assert len(server.requests) == 2
    reask = server.requests[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": bad}
    assert complaint in reask[-1]["content"]
    assert client.usage.requests == 2


def test_a_repeated_criterion_is_dropped_without_a_re_ask_when_enough_remain():
    with ScriptedServer(sequence(rubric_json([*GOOD, ("the FINAL answer is  12", 2)]))) as server:
        rubric, _ = induce(server)
    assert [c.text for c in rubric.criteria] == [t for t, _ in GOOD]
    assert len(server.requests) == 1


def test_rubric_that_stays_invalid_raises_llm_error():
    with ScriptedServer(sequence(rubric_json(GOOD[:1]))) as server, pytest.raises(LLMError, match="rubricator"):
        induce(server)
    assert len(server.requests) == 3  # the first ask and max_reasks=2 re-asks


def test_template_swap_changes_the_prompt_and_the_cache_key(tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite")
    with ScriptedServer(sequence(rubric_json(GOOD))) as server:
        induce(server, cache=cache)
        induce(server, cache=cache)  # same inputs, same template: served from the cache
        assert len(server.requests) == 1
        induce(server, cfg=JudgeConfig(rubric_template="rubricator_categories"), cache=cache)
        assert len(server.requests) == 2
        assert "pitfall" in user_text(server.requests[1]) and "pitfall" not in user_text(server.requests[0])
        edited = tmp_path / "edited.jinja"
        edited.write_text((PROMPTS_DIR / "rubricator.jinja").read_text() + "\n{# v2 #}\n")
        induce(server, cfg=JudgeConfig(rubric_template=str(edited)), cache=cache)
        assert len(server.requests) == 3  # same rendered text, different template file: a new key


@pytest.mark.parametrize(
    ("refresh", "steps", "reused"),
    [
        ("step", [0, 0, 1, 2], [False, True, False, False]),
        ("prompt", [0, 1, 5, 100], [False, True, True, True]),
        (3, [0, 1, 2, 3, 4, 6], [False, True, True, False, True, False]),
    ],
)
def test_rubric_store_reuse_policy(refresh, steps, reused):
    from ropd.types import Rubric

    store = RubricStore(refresh)
    outcome = []
    for step in steps:
        found = store.get("p", step)
        outcome.append(found is not None)
        if found is None:
            store.put("p", step, Rubric.model_validate(json.loads(rubric_json(GOOD))))
    assert outcome == reused
    assert store.get("other", steps[-1]) is None


def test_rubric_store_rejects_a_bad_policy():
    with pytest.raises(ValueError, match="rubric_refresh"):
        RubricStore(0)


# --- the `ropd rubric` command ----------------------------------------------------------------------


def write_input(tmp_path, data) -> str:
    path = tmp_path / "in.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_cli_rubric_prints_the_rubric_json(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    path = write_input(tmp_path, {"question": QUESTION, "teacher_answers": TEACHER, "student_answers": STUDENTS})
    with ScriptedServer(sequence(rubric_json(GOOD))) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(["rubric", "--input", path, "--model", "org/served-name", "--template", "rubricator_categories", "--timeout", "5"])
    out = capsys.readouterr()
    assert code == 0
    rubric = json.loads(out.out)
    assert [c["points"] for c in rubric["criteria"]] == [5, 3, 1, 2]
    assert server.requests[0]["model"] == "org/served-name"  # passed verbatim to the OPENAI_BASE_URL server
    assert server.requests[0]["temperature"] == 0.0  # the judge config's default, not the teacher's sampling
    assert "pitfall" in user_text(server.requests[0])


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("{not json", "not valid JSON"),
        ({"question": QUESTION, "student_answers": STUDENTS}, "field 'teacher_answers': Field required"),
        ({"question": QUESTION, "teacher_answers": "12", "student_answers": STUDENTS}, "field 'teacher_answers'"),
        ({"question": QUESTION, "teacher_answers": ["a", 3], "student_answers": []}, "field 'teacher_answers.1'"),
    ],
)
def test_cli_rubric_bad_input_exits_2_naming_the_field(tmp_path, capsys, data, named):
    path = write_input(tmp_path, data)
    code = main(["rubric", "--input", path, "--model", "m", "--base-url", "http://127.0.0.1:9/v1"])
    out = capsys.readouterr()
    assert code == 2
    assert named in out.err and path in out.err
    assert out.out == ""


def test_cli_rubric_failure_exits_1_with_one_line(tmp_path, capsys):
    path = write_input(tmp_path, {"question": QUESTION, "teacher_answers": TEACHER, "student_answers": STUDENTS})
    with ScriptedServer(sequence(Reply(status=400))) as server:
        code = main(["rubric", "--input", path, "--model", "m", "--base-url", server.base_url])
    out = capsys.readouterr()
    assert code == 1
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith("error:")


@pytest.mark.parametrize("template", ["rubricator", "rubricator_categories"])
def test_verifiable_criteria_ask_for_targets_and_replies_keep_them(template):
    criteria = [{"id": f"c{i}", "category": "x", "text": t, "points": p} for i, (t, p) in enumerate(GOOD, 1)]
    criteria[0]["target"], criteria[1]["target"], criteria[2]["target"] = 12, "", ["12"]
    with ScriptedServer(sequence(json.dumps({"criteria": criteria}))) as server:
        rubric, _ = induce(server, cfg=JudgeConfig(verifiable_criteria=True, rubric_template=template))
    assert [c.target for c in rubric.criteria] == ["12", "", None, None]  # a number as its text; a list dropped
    prompt = user_text(server.requests[0])
    assert 'put that value alone in its "target"' in prompt and '"target": "<value or empty>"' in prompt
    properties = server.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["criteria"]["items"]["properties"]
    assert list(properties) == ["id", "category", "text", "target", "points"]
