"""Teacher answers: k per prompt, fetched once and kept in the result cache for good.

Each answer is cached the moment it arrives, keyed by the prompt id, a hash of its chat messages,
the teacher's fingerprint (model, redacted base URL, sampling parameters, max tokens) plus the
prompt-template version, and the sample index. An interrupted fetch therefore resumes where it
stopped, and a changed teacher setting never reuses answers made under another. A local teacher
served by ropd is keyed by a fingerprint of its weights and how it is served
(`ropd.endpoints.serve.local_identity`), so a retrained folder or another serve dtype fetches anew. An
answer cut off at max_tokens is cached with that mark and, unless `use_truncated`, is not handed
out as a reference answer. With `offline_only`, a missing answer is an error instead of a request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ropd.config import RunConfig
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.llm import LLMClient, LLMError, Sample
from ropd.endpoints.models import ModelError, is_local
from ropd.endpoints.serve import local_identity
from ropd.endpoints.transport import share
from ropd.reward.prompts import TrajectoryText
from ropd.tools.toolbox import Toolbox, build_toolbox, trajectory_text
from ropd.types import PromptRow, Usage

# How a prompt row becomes the teacher's messages; bump it when that changes so old answers are not reused.
TEACHER_TEMPLATE_VERSION = "chat-messages-v1"
ROLE = "teacher"
UNSERVED = "http://127.0.0.1:9/v1"  # stands in for a local teacher's server when offline_only forbids calling it


class TeacherError(RuntimeError):
    """Teacher answers that could not be had: missing in offline mode, or failed requests."""


def cache_path(config: RunConfig) -> Path:
    """The run's result cache: output.cache, else <output dir>/cache.sqlite."""
    return Path(config.output.cache) if config.output.cache else Path(config.output.dir) / "cache.sqlite"


class TeacherPool:
    """k teacher answers per prompt, from the cache or the teacher's endpoint."""

    def __init__(
        self,
        client: LLMClient,
        num_answers: int,
        *,
        offline_only: bool = False,
        use_truncated: bool = False,
        tools: Toolbox | None = None,
    ):
        self.client = client
        self.num_answers = num_answers
        self.offline_only = offline_only
        self.use_truncated = use_truncated
        self.tools = tools

    @property
    def usage(self):
        return self.client.usage

    def _request(self, row: PromptRow) -> tuple[list[dict[str, Any]], dict[str, str]]:
        messages = [m.model_dump() for m in row.prompt]
        key_extra: dict[str, Any] = {"prompt_id": row.id, "template": TEACHER_TEMPLATE_VERSION}
        if self.tools is not None:  # a trajectory depends on the tools offered and their limits
            key_extra["tools"] = self.tools.fingerprint()
        return messages, key_extra

    def cached(self, row: PromptRow) -> list[str | None]:
        """The row's answers held in the cache, None where missing."""
        messages, key_extra = self._request(row)
        return self.client.lookup_chat(messages, n=self.num_answers, key_extra=key_extra)

    def count_missing(self, rows: list[PromptRow]) -> int:
        """How many answers for `rows` are not in the cache yet."""
        return sum(answer is None for row in rows for answer in self.cached(row))

    def count_truncated(self, rows: list[PromptRow]) -> int:
        """How many cached answers for `rows` were cut off at max_tokens."""
        counted = 0
        for row in rows:
            messages, key_extra = self._request(row)
            counted += sum(
                s is not None and s.truncated for s in self.client.lookup_samples(messages, n=self.num_answers, key_extra=key_extra)
            )
        return counted

    async def samples(self, row: PromptRow) -> list[Sample]:
        """All k answers to `row`, cut-off ones included and marked: cached ones, plus fetched ones unless offline_only
        (then missing ones are an error)."""
        messages, key_extra = self._request(row)
        if self.offline_only:
            found = self.client.lookup_samples(messages, n=self.num_answers, key_extra=key_extra)
            missing = sum(s is None for s in found)
            if missing:
                raise TeacherError(self._missing_message(missing, f"prompt '{row.id}'"))
            self.client.usage.cache_hits += len(found)
            return [s or Sample("") for s in found]
        if self.tools is not None:
            return await tool_samples(self.client, self.tools, messages, self.num_answers, key_extra)
        return await self.client.chat_samples(messages, n=self.num_answers, key_extra=key_extra)

    async def answers(self, row: PromptRow) -> list[str]:
        """The answers to `row` usable as references: the k answers less those cut off at max_tokens (unless use_truncated).

        Raises TeacherError when every answer was cut off, naming max_tokens.
        """
        samples = await self.samples(row)
        usable = [s.text for s in samples if self.use_truncated or not s.truncated]
        if samples and not usable:
            raise TeacherError(
                f"all {len(samples)} teacher answers for prompt '{row.id}' were cut off at max_tokens="
                f"{self.client.endpoint.max_tokens}; raise teacher.max_tokens, or set teacher.use_truncated to use them"
            )
        return usable

    async def fetch_all(self, rows: list[PromptRow], progress: bool = True) -> dict[str, list[str]]:
        """Answers for every row (id -> answers usable as references: cut-off ones are fetched and cached, marked, but left
        out unless use_truncated); fails only after every other prompt has been fetched and cached."""
        if self.offline_only and (missing := self.count_missing(rows)):
            raise TeacherError(self._missing_message(missing, f"the {len(rows)} prompts"))
        columns = (TextColumn("teacher answers"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
            task = bar.add_task("teacher", total=len(rows))

            async def one(row: PromptRow) -> list[str]:
                try:
                    return [s.text for s in await self.samples(row) if self.use_truncated or not s.truncated]
                finally:
                    bar.advance(task)

            results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        failed = [(row.id, r) for row, r in zip(rows, results, strict=True) if isinstance(r, BaseException)]
        for _, error in failed:
            if not isinstance(error, (LLMError, TeacherError)):
                raise error
        if failed:
            first_id, first_error = failed[0]
            raise TeacherError(
                f"{len(failed)} of {len(rows)} prompts got no teacher answers (first: prompt '{first_id}': {first_error}); "
                f"the answers that did arrive are cached, so rerunning fetches only the rest"
            )
        return {row.id: r for row, r in zip(rows, results, strict=True)}  # type: ignore[misc]

    def _missing_message(self, missing: int, scope: str) -> str:
        where = self.client.cache.path if self.client.cache is not None else "(no cache)"
        return (
            f"{missing} teacher answer(s) for {scope} are not in the cache {where}, and teacher.offline_only is set; "
            f"fill the cache first with `ropd teach` (same dataset, teacher and sampling settings), or unset offline_only"
        )


async def tool_samples(client: LLMClient, tools: Toolbox, messages: list[dict], n: int, key_extra: dict[str, Any]) -> list[Sample]:
    """`n` tool-using answers to `messages`: cached ones, and new ones run through the tool loop (`tool_trajectory`),
    each cached whole (every turn, call and output) the moment it is done."""
    found = client.lookup_samples(messages, n=n, key_extra=key_extra)
    client.usage.cache_hits += sum(s is not None for s in found)
    missing = [i for i, s in enumerate(found) if s is None]
    try:
        made = await asyncio.gather(*(tool_trajectory(client, tools, messages, key_extra, i) for i in missing))
    except LLMError:
        client.usage.failures += 1
        raise
    for index, sample in zip(missing, made, strict=True):
        found[index] = sample
    # cached under a key naming the tool set, so written by `tool_trajectory`: their tool marks are ropd's own
    return [Sample(TrajectoryText(s.text), s.truncated) if s is not None else Sample("") for s in found]


async def tool_trajectory(client: LLMClient, tools: Toolbox, messages: list[dict], key_extra: dict[str, Any], index: int) -> Sample:
    """One answer with tools: ask, run every tool call the reply makes, append the results and ask again, for at most
    `tools.max_iterations` rounds of calls (a call in the last reply is left unanswered). The trajectory is cached as
    a whole, with its text for the rubricator and judge (`ropd.tools.toolbox.trajectory_text`)."""
    conversation, trajectory = list(messages), []
    spent, calls, failures, finish_reason = Usage(), 0, 0, None
    schemas = tools.schemas()
    for round_index in range(tools.max_iterations + 1):
        response, cost = await client.transport.create(conversation, n=1, seed=client.sample_seed(index), tools=schemas)
        spent.add(cost)
        choice = response.choices[0]
        finish_reason = getattr(choice, "finish_reason", None)
        assistant = assistant_message(choice.message)
        trajectory.append(assistant)
        conversation.append(assistant)
        if not assistant.get("tool_calls") or round_index == tools.max_iterations:
            break
        for call in assistant["tool_calls"]:
            result = await asyncio.to_thread(tools.call, call["function"]["name"], call["function"]["arguments"])
            calls, failures = calls + 1, failures + result.failed
            output = {"role": "tool", "tool_call_id": call["id"], "name": result.name, "content": result.content}
            trajectory.append(output)
            conversation.append(output)
    text = trajectory_text(trajectory)
    record = {"text": text, "finish_reason": finish_reason, "trajectory": trajectory, "tool_calls": calls, "tool_failures": failures}
    if client.cache is not None:
        client.cache.put(client.chat_key(messages, key_extra, index), client.role, record, share(spent, 1), client.fingerprint)
    return Sample(text, truncated=finish_reason == "length")


def assistant_message(message: Any) -> dict[str, Any]:
    """An OpenAI reply message as a plain chat message (tool calls with their ids and JSON arguments)."""
    out: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
    calls = [
        {"id": c.id or f"call_{i}", "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
        for i, c in enumerate(message.tool_calls or [])
        if getattr(c, "function", None) is not None
    ]
    if calls:
        out["tool_calls"] = calls
    return out


def build_teacher_pool(config: RunConfig, cache: ResultCache, *, local_base_url: str | None = None) -> TeacherPool:
    """The run's teacher pool. A local teacher needs `local_base_url`, where it is being served (see `open_teacher_pool`),
    unless offline_only; that URL changes between runs, so cache keys name the model's weights instead."""
    if needs_local_server(config) and local_base_url is None and not config.teacher.offline_only:
        raise ModelError(
            f"the teacher '{config.teacher.model}' is a local model: serve it (open_teacher_pool does) or pass --teacher-base-url"
        )
    return _pool(config, cache, local_base_url)


def _pool(config: RunConfig, cache: ResultCache, local_base_url: str | None) -> TeacherPool:
    endpoint, identity = config.teacher, None
    if needs_local_server(config):
        endpoint = endpoint.model_copy(update={"base_url": local_base_url or UNSERVED})
        identity = local_identity(config.teacher.model, config.models, config.teacher.serve_dtype, config.teacher.serve_engine)
    client = LLMClient(endpoint, role=ROLE, cache=cache, prices=config.prices, aliases=config.models, identity=identity)
    teacher = config.teacher
    tools = build_toolbox(config.tools) if config.tools.teacher else None
    return TeacherPool(client, teacher.num_answers, offline_only=teacher.offline_only, use_truncated=teacher.use_truncated, tools=tools)


def needs_local_server(config: RunConfig) -> bool:
    """True when the teacher is a local model and no base URL serves it."""
    return not config.teacher.base_url and is_local(config.teacher.model, config.models)


@contextlib.contextmanager
def open_teacher_pool(config: RunConfig, cache: ResultCache, rows: list[PromptRow] | None = None) -> Iterator[TeacherPool]:
    """A teacher pool that serves a local teacher on loopback for the duration, when it needs a server.

    No server is started when offline_only is set, or when `rows` are given and all their answers are cached.
    """
    if needs_local_server(config):
        unserved = _pool(config, cache, None)
        if config.teacher.offline_only or (rows is not None and unserved.count_missing(rows) == 0):
            yield unserved
            return
    else:
        yield build_teacher_pool(config, cache)
        return
    try:
        from ropd.endpoints.serve import local_server
    except ImportError as exc:
        raise ModelError(
            f"the teacher '{config.teacher.model}' is a local model and needs a server, but ropd.endpoints.serve cannot be used ({exc}); "
            f"serve it yourself and pass --teacher-base-url"
        ) from None
    teacher = config.teacher
    with local_server(teacher.model, models=config.models, dtype=teacher.serve_dtype, engine=teacher.serve_engine) as base_url:
        yield build_teacher_pool(config, cache, local_base_url=base_url)


async def _fetch_and_close(pool: TeacherPool, rows: list[PromptRow], progress: bool) -> None:
    try:
        await pool.fetch_all(rows, progress=progress)
    finally:
        await pool.client.aclose()


def teach(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Fetch every missing teacher answer for the configured dataset; return a summary (what `ropd teach` prints)."""
    from ropd.data import load_prompts

    rows = load_prompts(config.data.dataset, config.data.split, config.data.max_prompts, config.data.system_prompt)
    with ResultCache(cache_path(config)) as cache, open_teacher_pool(config, cache, rows) as pool:
        error: TeacherError | None = None
        try:
            asyncio.run(_fetch_and_close(pool, rows, progress))
        except TeacherError as exc:
            error = exc
        usage, missing = pool.usage, pool.count_missing(rows)
        summary = {
            "prompts": len(rows),
            "answers_per_prompt": pool.num_answers,
            "answers_fetched": len(rows) * pool.num_answers - usage.cache_hits - missing,
            "cache_hits": usage.cache_hits,
            "missing": missing,
            "truncated": pool.count_truncated(rows),
            "requests": usage.requests,
            "retries": usage.retries,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": round(usage.cost_usd, 6),
            "seconds": round(usage.seconds, 3),
            "teacher": pool.client.model,
            "cache": str(cache.path),
        }
        if error is not None:
            summary["error"] = str(error)
    return summary
