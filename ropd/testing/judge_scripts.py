"""Scripted rubricator and judge behaviour for ScriptedServer: replies built by reading the rendered prompt.

A scripted judge finds each answer block by the prompt's boundary code (as a model reading the
prompt would), decides every criterion with a plain-text rule, and replies per label, so a test
can check that verdicts come back to the right answers whatever the shuffle.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

from ropd.config import EndpointConfig
from ropd.endpoints.llm import LLMClient

BOUNDARY = re.compile(r"<<<BEGIN QUESTION ([0-9a-f]{16})>>>")


def user_text(body: dict[str, Any]) -> str:
    """The last user message of a request (a re-ask appends one; the rendered prompt is the first)."""
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def system_text(body: dict[str, Any]) -> str:
    return next((m["content"] for m in body["messages"] if m["role"] == "system"), "")


def is_reask(body: dict[str, Any]) -> bool:
    return sum(m["role"] == "user" for m in body["messages"]) > 1


def blocks(text: str, kind: str) -> dict[str, str]:
    """{label: text} of every `kind` block delimited with this prompt's boundary code."""
    match = BOUNDARY.search(text)
    assert match, "no boundary code in the prompt"
    code = re.escape(match.group(1))
    pattern = re.compile(rf"^<<<BEGIN {kind} (\S+) {code}>>>\n(.*?)\n?<<<END {kind} \1 {code}>>>$", re.DOTALL | re.MULTILINE)
    return {label: body for label, body in pattern.findall(text)}


def is_judge_request(body: dict[str, Any]) -> bool:
    return "<<<BEGIN ANSWER" in user_text(body)


def rubric_json(criteria: list[tuple[str, int]], category: str = "correctness") -> str:
    """A rubric reply: criteria given as (text, points), ids c1.."""
    items = [{"id": f"c{i}", "category": category, "text": text, "points": points} for i, (text, points) in enumerate(criteria, 1)]
    return json.dumps({"criteria": items})


def criteria_texts(body: dict[str, Any]) -> list[str]:
    """The rubric criteria as listed in a judge prompt ("1. text" lines under "Rubric")."""
    text = user_text(body)
    section = text.split("Rubric", 1)[1].split("Answers (", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", section, re.MULTILINE)]


def judge_reply(body: dict[str, Any], decide: Callable[[str, str], bool], **extra: Any) -> str:
    """Verdicts for every answer in the prompt: met[j] = decide(answer text, criterion j text)."""
    answers = blocks(user_text(body), "ANSWER")
    criteria = criteria_texts(body)
    verdicts = [{"answer": int(label), "met": [decide(text, c) for c in criteria], **extra} for label, text in answers.items()]
    return json.dumps({"verdicts": verdicts})


def contains_rule(answer: str, criterion: str) -> bool:
    """A criterion 'mentions X' is met when the answer contains X."""
    return criterion.removeprefix("mentions ").strip() in answer


def sequence(*replies: Any) -> Callable[[dict[str, Any]], Any]:
    """A handler giving the replies in order, then repeating the last one."""
    queue = list(replies)
    lock = threading.Lock()

    def handler(body: dict[str, Any]) -> Any:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


def scripted_client(server: Any, role: str, cache: Any = None, max_reasks: int = 2, **endpoint: Any) -> LLMClient:
    """An LLMClient (real openai client, real HTTP) for a ScriptedServer, with quick retries."""
    settings = {"model": "scripted-judge", "base_url": server.base_url, "timeout": 10.0, "max_retries": 1, **endpoint}
    client = LLMClient(EndpointConfig(**settings), role=role, cache=cache, max_reasks=max_reasks)
    client.backoff_initial = 0.01
    client.backoff_max = 0.05
    return client
