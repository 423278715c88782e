"""The LLM client against a real HTTP server with scripted faults, through the real openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest
from pydantic import BaseModel, Field

from ropd.config import EndpointConfig, Price
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.llm import LLMClient, LLMError, extract_json
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.types import JudgeOutput, Rubric

pytestmark = pytest.mark.timeout(60)

CANARY = "sk-canary-7f3a9c1e5b2d"
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
RUBRIC = {"criteria": [{"id": "c1", "category": "correctness", "text": "The final answer is 4.", "points": 5}]}


class Answer(BaseModel):
    answer: int = Field(ge=0)


@pytest.fixture(autouse=True)
def canary_key(monkeypatch):
    monkeypatch.setenv("ROPD_TEST_KEY", CANARY)


def make_client(server: ScriptedServer, cache: ResultCache | None = None, role: str = "judge", **endpoint) -> LLMClient:
    settings = {"model": "scripted-model", "base_url": server.base_url, "api_key_env": "ROPD_TEST_KEY", "timeout": 5.0, **endpoint}
    client = LLMClient(EndpointConfig(**settings), role=role, cache=cache, prices={"scripted-model": Price(input=1.0, output=2.0)})
    client.backoff_initial = 0.01
    client.backoff_max = 0.05
    return client


def sequence(*replies: Reply | str):
    """A handler giving the replies in order, then repeating the last one."""
    queue = list(replies)
    lock = threading.Lock()

    def handler(body: dict) -> Reply | str:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


# --- retries ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [{"Retry-After": "1"}, {"retry-after-ms": "1000"}])
def test_429_waits_as_long_as_retry_after_says_and_counts_the_retry(header):
    with ScriptedServer(sequence(Reply(status=429, headers=header), "four")) as server:
        client = make_client(server)
        assert asyncio.run(client.chat(QUESTION)) == ["four"]
    gap = server.arrivals[1] - server.arrivals[0]
    assert 0.95 <= gap < 3.0, gap  # the backoff alone would wait ~0.01 s
    assert (client.usage.requests, client.usage.retries, client.usage.failures) == (2, 1, 0)


def test_server_error_then_success():
    with ScriptedServer(sequence(Reply(status=500), Reply(status=503), "four")) as server:
        client = make_client(server)
        assert asyncio.run(client.chat(QUESTION)) == ["four"]
    assert (len(server.requests), client.usage.retries) == (3, 2)


def test_a_hang_past_the_timeout_is_retried():
    with ScriptedServer(sequence(Reply(content="late", delay=30), "four")) as server:
        client = make_client(server, timeout=0.5)
        started = time.monotonic()
        assert asyncio.run(client.chat(QUESTION)) == ["four"]
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5, elapsed
    assert (len(server.requests), client.usage.retries) == (2, 1)


def test_a_dropped_connection_is_retried():
    with ScriptedServer(sequence(Reply(drop=True), "four")) as server:
        client = make_client(server)
        assert asyncio.run(client.chat(QUESTION)) == ["four"]
    assert (len(server.requests), client.usage.retries) == (2, 1)


def test_a_body_that_is_not_json_is_retried():
    with ScriptedServer(sequence(Reply(raw="<html>502 Bad Gateway</html>"), "four")) as server:
        client = make_client(server)
        assert asyncio.run(client.chat(QUESTION)) == ["four"]
    assert (len(server.requests), client.usage.retries) == (2, 1)


def test_giving_up_after_max_retries_names_role_model_and_error():
    with ScriptedServer(sequence(Reply(status=503))) as server:
        client = make_client(server, max_retries=2)
        with pytest.raises(LLMError) as caught:
            asyncio.run(client.chat(QUESTION))
    message = str(caught.value)
    assert "judge" in message and "scripted-model" in message and "503" in message and "3 attempt" in message
    assert (len(server.requests), client.usage.retries, client.usage.failures) == (3, 2, 1)


def test_a_client_error_is_not_retried():
    with ScriptedServer(sequence(Reply(status=401))) as server:
        client = make_client(server)
        with pytest.raises(LLMError, match="ROPD_TEST_KEY"):
            asyncio.run(client.chat(QUESTION))
    assert len(server.requests) == 1


# --- structured output ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(RUBRIC),
        "Here is the rubric you asked for:\n" + json.dumps(RUBRIC) + "\nLet me know if it needs changes.",
        "```json\n" + json.dumps(RUBRIC, indent=2) + "\n```",
        "<think>maybe {criteria: ...}</think>\nSure.\n```\n" + json.dumps(RUBRIC) + "\n```",
    ],
    ids=["bare", "prose", "fenced", "think-then-fence"],
)
def test_json_is_found_in_prose_and_code_fences(text):
    with ScriptedServer(sequence(text)) as server:
        rubric = asyncio.run(make_client(server).chat_json(QUESTION, Rubric))
    assert rubric.criteria[0].text == "The final answer is 4."
    assert len(server.requests) == 1
    assert server.requests[0]["response_format"]["type"] == "json_schema"
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == Rubric.model_json_schema()


def test_extract_json_rejects_output_without_json():
    with pytest.raises(ValueError, match="no parseable JSON"):
        extract_json("I cannot answer that {not json}")


def test_an_invalid_object_is_re_asked_with_the_error_shown():
    bad = '{"criteria": [{"id": "c1", "text": "The final answer is 4.", "points": "many"}]}'
    with ScriptedServer(sequence(bad, json.dumps(RUBRIC))) as server:
        rubric = asyncio.run(make_client(server).chat_json(QUESTION, Rubric))
    assert rubric.criteria[0].points == 5
    assert len(server.requests) == 2
    *_, shown, reask = server.requests[1]["messages"]
    assert shown == {"role": "assistant", "content": bad}
    assert "criteria.0.points" in reask["content"] and "valid integer" in reask["content"]
    assert "cut off" not in reask["content"]
    assert server.requests[1]["messages"][0] == QUESTION[0]


def test_output_cut_off_at_max_tokens_is_re_asked_with_that_said():
    cut = Reply(content='{"criteria": [{"id": "c1", "text": "The final answer is', finish_reason="length")
    with ScriptedServer(sequence(cut, json.dumps(RUBRIC))) as server:
        asyncio.run(make_client(server, max_tokens=64).chat_json(QUESTION, Rubric))
    reask = server.requests[1]["messages"][-1]["content"]
    assert "no parseable JSON" in reask and "cut off at the limit of 64 tokens" in reask
    assert "cut off" not in server.requests[0]["messages"][-1]["content"]


def test_giving_up_on_replies_cut_off_at_max_tokens_says_so():
    cut = Reply(content='{"criteria": [{"id": "c1", "text": "The final answer is', finish_reason="length")
    with ScriptedServer(sequence(cut)) as server:
        client = make_client(server, max_tokens=64)
        client.max_reasks = 1
        with pytest.raises(LLMError, match=r"cut off at max_tokens=64: raise it"):
            asyncio.run(client.chat_json(QUESTION, Rubric))
    assert len(server.requests) == 2


def test_a_failed_semantic_check_is_re_asked_and_bounded(tmp_path):
    def at_least_two(rubric: Rubric) -> None:
        if len(rubric.criteria) < 2:
            raise ValueError("the rubric needs at least 2 criteria")

    with ScriptedServer(sequence(json.dumps(RUBRIC))) as server, ResultCache(tmp_path / "cache.sqlite") as cache:
        client = make_client(server, cache=cache)
        client.max_reasks = 2
        with pytest.raises(LLMError, match="at least 2 criteria"):
            asyncio.run(client.chat_json(QUESTION, Rubric, check=at_least_two))
        assert cache.stats()["rows"] == 0  # nothing invalid is cached
    assert len(server.requests) == 3
    assert "at least 2 criteria" in server.requests[2]["messages"][-1]["content"]
    assert client.usage.failures == 1


def test_a_server_rejecting_json_schema_gets_json_object_then_plain_requests():
    def handler(body: dict) -> Reply:
        kind = body.get("response_format", {}).get("type")
        if kind == "json_schema":
            return Reply(status=400)
        if kind == "json_object":
            return Reply(status=422)
        return Reply(content='{"answer": 4}')

    with ScriptedServer(handler) as server:
        client = make_client(server)
        assert asyncio.run(client.chat_json(QUESTION, Answer)).answer == 4
        assert asyncio.run(client.chat_json([*QUESTION, {"role": "user", "content": "again"}], Answer)).answer == 4
    kinds = [body.get("response_format", {}).get("type") for body in server.requests]
    assert kinds == ["json_schema", "json_object", None, None]  # the fallback is remembered
    assert client.usage.retries == 0


def test_a_400_that_is_not_about_response_format_fails_without_degrading_the_client():
    with ScriptedServer(sequence(Reply(status=400))) as server:
        client = make_client(server)
        with pytest.raises(LLMError, match="400"):
            asyncio.run(client.chat_json(QUESTION, Answer))
    assert len(server.requests) == 3
    assert client.structured.mode == 0  # still json_schema


def test_a_verdict_with_only_answer_and_met_is_accepted():
    with ScriptedServer(sequence('{"verdicts": [{"answer": 1, "met": [true, false]}], "total": 99}')) as server:
        out = asyncio.run(make_client(server).chat_json(QUESTION, JudgeOutput))
    assert out.verdicts[0].met == [True, False]


# --- limits ----------------------------------------------------------------------------------------------


def test_concurrency_limit_is_respected():
    with ScriptedServer(sequence("ok"), latency=0.2) as server:
        client = make_client(server, max_concurrency=3)

        async def many():
            return await asyncio.gather(*(client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(10)))

        assert len(asyncio.run(many())) == 10
    assert server.max_in_flight == 3


def max_in_any_second(arrivals: list[float]) -> int:
    return max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)


def assert_paced(start: float, arrivals: list[float], burst: int, per_second: float) -> None:
    """Arrival k (0-based) comes no sooner than the bucket allows: `burst` at once, then `per_second`."""
    for k, moment in enumerate(sorted(arrivals)):
        assert moment - start >= (k + 1 - burst) / per_second - 0.05, (k, moment - start)


def test_requests_per_minute_are_limited():
    with ScriptedServer(sequence("ok")) as server:
        client = make_client(server, requests_per_minute=600)  # 10 per second

        async def many():
            await asyncio.gather(*(client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(25)))

        started = time.monotonic()
        asyncio.run(many())
    assert len(server.requests) == 25
    assert_paced(started, server.arrivals, burst=10, per_second=10)
    assert server.arrivals[-1] - server.arrivals[0] < 3.0


def test_tokens_per_minute_are_limited():
    with ScriptedServer(sequence("ok")) as server:
        client = make_client(server, tokens_per_minute=6000, max_tokens=18)  # 100 tokens/s; each request counts 20

        async def many():
            await asyncio.gather(*(client.chat([{"role": "user", "content": f"question {i}"}]) for i in range(14)))

        started = time.monotonic()
        asyncio.run(many())
    assert_paced(started, server.arrivals, burst=5, per_second=5)
    assert server.arrivals[-1] - server.arrivals[0] < 4.0


# --- usage, n, cache ----------------------------------------------------------------------------------------


def test_usage_and_cost_are_accounted():
    with ScriptedServer(sequence(Reply(status=500), Reply(content="four", usage=(100, 50)))) as server:
        client = make_client(server)
        asyncio.run(client.chat(QUESTION))
        asyncio.run(client.chat([*QUESTION, {"role": "user", "content": "sure?"}]))
    usage = client.usage
    assert (usage.requests, usage.retries, usage.failures, usage.cache_hits) == (3, 1, 0, 0)
    assert (usage.prompt_tokens, usage.completion_tokens) == (200, 100)
    assert usage.cost_usd == pytest.approx((200 * 1.0 + 100 * 2.0) / 1e6)
    assert usage.seconds > 0


def test_n_is_used_when_the_server_honours_it():
    with ScriptedServer(lambda body: Reply(content=[f"a{i}" for i in range(body.get("n", 1))], usage=(30, 90))) as server:
        client = make_client(server)
        assert asyncio.run(client.chat(QUESTION, n=3)) == ["a0", "a1", "a2"]
    assert len(server.requests) == 1 and server.requests[0]["n"] == 3


def test_separate_requests_when_the_server_ignores_n():
    with ScriptedServer(sequence("same")) as server:
        client = make_client(server, seed=7)
        assert asyncio.run(client.chat(QUESTION, n=3)) == ["same"] * 3
        asyncio.run(client.chat([*QUESTION, {"role": "user", "content": "more"}], n=2))
    assert [body.get("n", 1) for body in server.requests] == [3, 1, 1, 1, 1]  # n is not tried again
    assert sorted(body["seed"] for body in server.requests[1:3]) == [8, 9]  # distinct seeds per sample


def test_cache_hits_make_no_request(tmp_path):
    honours_n = ScriptedServer(lambda body: Reply(content=[f"a{i}" for i in range(body.get("n", 1))]))
    with honours_n as server, ResultCache(tmp_path / "cache.sqlite") as cache:
        client = make_client(server, cache=cache)
        first = asyncio.run(client.chat(QUESTION, n=2, key_extra={"prompt_id": "p1"}))
        again = make_client(server, cache=cache)
        assert asyncio.run(again.chat(QUESTION, n=2, key_extra={"prompt_id": "p1"})) == first
        assert len(server.requests) == 1 and again.usage.cache_hits == 2 and again.usage.requests == 0
        assert asyncio.run(again.chat(QUESTION, n=3, key_extra={"prompt_id": "p1"}))[:2] == first  # only sample 3 is new
        assert len(server.requests) == 2 and server.requests[1].get("n", 1) == 1
        hotter = make_client(server, cache=cache, temperature=0.5)  # another fingerprint is never mixed in
        asyncio.run(hotter.chat(QUESTION, n=2, key_extra={"prompt_id": "p1"}))
        assert len(server.requests) == 3


def test_validated_json_is_cached_and_reused(tmp_path):
    with ScriptedServer(sequence(json.dumps(RUBRIC))) as server, ResultCache(tmp_path / "cache.sqlite") as cache:
        first = asyncio.run(make_client(server, cache=cache).chat_json(QUESTION, Rubric, key_extra={"template": "t1"}))
        client = make_client(server, cache=cache)
        assert asyncio.run(client.chat_json(QUESTION, Rubric, key_extra={"template": "t1"})) == first
        assert len(server.requests) == 1 and client.usage.cache_hits == 1
        asyncio.run(client.chat_json(QUESTION, Rubric, key_extra={"template": "t2"}))
        assert len(server.requests) == 2
        assert cache.stats()["roles"]["judge"]["rows"] == 2


def test_one_client_works_across_event_loops():
    with ScriptedServer(sequence("ok"), latency=0.05) as server:
        client = make_client(server, max_concurrency=2, requests_per_minute=6000)
        for _ in range(3):
            assert asyncio.run(client.chat(QUESTION)) == ["ok"]
    assert len(server.requests) == 3


# --- secrets ---------------------------------------------------------------------------------------------------


def test_the_api_key_goes_only_in_the_authorization_header(tmp_path, caplog):
    echo_key = Reply(status=401, raw=json.dumps({"error": {"message": f"Incorrect API key provided: {CANARY}"}}))
    cache_path = tmp_path / "cache.sqlite"
    caplog.set_level(logging.DEBUG)
    echo_on_429 = Reply(status=429, raw=json.dumps({"error": {"message": f"slow down {CANARY}"}}))
    with ScriptedServer(sequence(echo_on_429, "ok", echo_key)) as server, ResultCache(cache_path) as cache:
        client = make_client(server, cache=cache)
        asyncio.run(client.chat(QUESTION))
        with pytest.raises(LLMError) as caught:
            asyncio.run(client.chat([*QUESTION, {"role": "user", "content": "again"}]))
    assert server.auth_headers[0] == f"Bearer {CANARY}"
    assert all(CANARY not in json.dumps(body) for body in server.requests)
    assert CANARY not in str(caught.value) and "Incorrect API key" in str(caught.value)
    assert CANARY not in caplog.text and "slow down" in caplog.text
    assert CANARY not in repr(client) and CANARY not in json.dumps(client.fingerprint)
    for path in tmp_path.iterdir():
        assert CANARY.encode() not in path.read_bytes(), path


def test_credentials_in_the_base_url_stay_out_of_cache_keys():
    endpoint = EndpointConfig(model="m", base_url="http://user:secret@127.0.0.1:9/v1?key=secret")
    client = LLMClient(endpoint, role="teacher")
    assert "secret" not in json.dumps(client.fingerprint) and "secret" not in repr(client)
