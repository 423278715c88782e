"""One client for every OpenAI-compatible endpoint: cached sampling and structured output over a transport.

    client = LLMClient(endpoint, role="judge", cache=cache, prices=config.prices)
    texts = await client.chat(messages, n=4, key_extra={"prompt_id": "p1"})
    rubric = await client.chat_json(messages, Rubric, check=lambda r: r.check_bounds(4, 12, 1, 5))

Three layers, each with one job:

- `Transport` (ropd.endpoints.transport): the SDK, retries with backoff, rate and concurrency limits, usage and
  cost, and the API key kept out of every message.
- `StructuredOutput`: asks for the strictest response_format the server accepts (json_schema, then
  json_object, then none), parses tolerantly, validates with pydantic and re-asks with the error shown.
- `LLMClient`: what callers use. Results are cached by content: `chat` caches each of its n samples
  under its own key (one request with `n` where the server honours it), `chat_json` caches the
  validated object. A sample cut off at max_tokens is cached with its finish reason, so callers can
  tell it from a complete one (`Sample.truncated`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ropd.config import EndpointConfig, ModelAlias, Price, redact_url
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.transport import FormatRejected, LLMError, SamplesRejected, Transport, share
from ropd.reward.prompts import load_template
from ropd.types import Usage

__all__ = ["LLMClient", "LLMError", "Sample", "StructuredOutput", "extract_json"]

T = TypeVar("T", bound=BaseModel)

log = logging.getLogger(__name__)

JSON_MODES = ("json_schema", "json_object", "text")
REASK_TEMPLATE = "reask"


# --- tolerant JSON extraction ------------------------------------------------------------------------

FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in a model's output: bare, in a code fence, or wrapped in prose (after any </think>)."""
    text = text.rsplit("</think>", 1)[-1].strip()
    for candidate in [text, *FENCE.findall(text)]:
        try:
            return json.loads(candidate.strip())
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for opener in "{[":
        for start in (i for i, ch in enumerate(text) if ch == opener):
            try:
                return decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                continue
    raise ValueError("the output contains no parseable JSON object")


def describe_error(exc: Exception) -> str:
    """A short, model-readable account of why an output was rejected."""
    if isinstance(exc, ValidationError):
        problems = [f"field '{'.'.join(str(p) for p in e['loc']) or '(top level)'}': {e['msg']}" for e in exc.errors()[:8]]
        return "; ".join(problems)
    return str(exc)


@dataclass(frozen=True)
class Sample:
    """One completion as cached: its text, and whether the server cut it off at max_tokens (finish reason "length")."""

    text: str
    truncated: bool = False


# --- structured output ---------------------------------------------------------------------------------


class StructuredOutput:
    """JSON replies from one transport: the strictest response_format the server accepts, validated, re-asked on error."""

    def __init__(self, transport: Transport, max_reasks: int = 2):
        self.transport = transport
        self.max_reasks = max_reasks
        self.mode = 0  # index into JSON_MODES: the strictest mode this server has not rejected

    async def create(self, messages: list[dict], json_schema: dict, name: str, *, n: int = 1, seed: int | None = None):
        """Transport.create under the strictest response_format this server has not rejected; (response, cost)."""
        first_mode = self.mode
        while True:
            mode = self.mode
            try:
                return await self.transport.create(messages, n=n, seed=seed, response_format=response_format(mode, json_schema, name))
            except FormatRejected:
                self.mode = max(self.mode, mode + 1)
                log.info(
                    "%s: the server rejected response_format %s; trying %s", self.transport.role, JSON_MODES[mode], JSON_MODES[mode + 1]
                )
                continue
            except LLMError:
                if mode > first_mode and JSON_MODES[mode] == "text":  # plain requests fail too: the 400 was not about response_format
                    self.mode = first_mode
                raise

    async def ask(
        self, messages: list[dict], schema: type[T], json_schema: dict, check: Callable[[T], None] | None = None
    ) -> tuple[T, Usage]:
        """A valid `schema` object and what all its requests cost; re-asks up to max_reasks times with the error shown."""
        transport = self.transport
        conversation, spent, error, finish_reason = list(messages), Usage(), "", None
        for _ in range(self.max_reasks + 1):
            response, cost = await self.create(conversation, json_schema, schema.__name__)
            choice = response.choices[0]
            text, finish_reason = choice.message.content or "", choice.finish_reason
            spent.add(cost)
            try:
                return validate(extract_json(text), schema, check), spent
            except ValueError as exc:
                error = describe_error(exc)
                log.info("%s: output failed validation (%s); re-asking", transport.role, transport.scrub(error))
                reask = load_template(REASK_TEMPLATE, {"error", "schema", "cut_off", "max_tokens"}).render(
                    error=error, schema=json.dumps(json_schema), cut_off=finish_reason == "length", max_tokens=transport.endpoint.max_tokens
                )
                conversation = [*messages, {"role": "assistant", "content": text}, *reask]
        max_tokens = transport.endpoint.max_tokens
        cut_off = f" (its last reply was cut off at max_tokens={max_tokens}: raise it)" if finish_reason == "length" else ""
        raise LLMError(
            transport.scrub(
                f"{transport.role} ({transport.model}) gave no valid {schema.__name__} after {self.max_reasks} re-asks: {error}{cut_off}"
            )
        )


def response_format(mode: int, json_schema: dict, name: str) -> dict | None:
    """The response_format of a JSON mode (json_schema, json_object; None for plain text)."""
    if JSON_MODES[mode] == "json_schema":
        safe_name = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "output"
        return {"type": "json_schema", "json_schema": {"name": safe_name, "schema": json_schema, "strict": False}}
    if JSON_MODES[mode] == "json_object":
        return {"type": "json_object"}
    return None


def validate(data: Any, schema: type[T], check: Callable[[T], None] | None) -> T:
    """`data` as a `schema` object that passes `check` (raises ValueError, ValidationError included, otherwise)."""
    value = schema.model_validate(data)
    if check is not None:
        check(value)
    return value


# --- the client: cached sampling ------------------------------------------------------------------------


class LLMClient:
    """Chat completions against one endpoint for one role, cached by content, with usage accounted in `usage`."""

    def __init__(
        self,
        endpoint: EndpointConfig,
        *,
        role: str,
        cache: ResultCache | None = None,
        prices: dict[str, Price] | None = None,
        max_reasks: int = 2,
        aliases: dict[str, ModelAlias] | None = None,
        identity: str | None = None,
    ):
        """`identity` replaces the base URL in cache keys, for servers whose URL changes between runs (local ones)."""
        self.transport = Transport(endpoint, role=role, prices=prices, aliases=aliases)
        if identity is not None:  # a local model ropd serves: nothing to pay
            self.transport.price = Price(input=0.0, output=0.0)
        self.structured = StructuredOutput(self.transport, max_reasks)
        self.cache = cache
        self.endpoint, self.role, self.model, self.base_url = endpoint, role, self.transport.model, self.transport.base_url
        self.usage: Usage = self.transport.usage  # the transport's: requests, retries, tokens, cost; failures and cache hits here
        self.fingerprint = {
            "role": role,
            "model": self.model,
            "endpoint": identity or redact_url(self.base_url),
            "temperature": endpoint.temperature,
            "top_p": endpoint.top_p,
            "max_tokens": endpoint.max_tokens,
            "seed": endpoint.seed,
        }
        self._n_honoured: bool | None = None

    def __repr__(self) -> str:
        return f"LLMClient(role={self.role!r}, model={self.model!r}, base_url={redact_url(self.base_url)!r})"

    # --- retry and re-ask settings, kept by the transport and the structured output ----------------------

    @property
    def backoff_initial(self) -> float:
        """Seconds of the first retry's backoff."""
        return self.transport.backoff_initial

    @backoff_initial.setter
    def backoff_initial(self, seconds: float) -> None:
        self.transport.backoff_initial = seconds

    @property
    def backoff_max(self) -> float:
        """The longest backoff between retries, in seconds."""
        return self.transport.backoff_max

    @backoff_max.setter
    def backoff_max(self, seconds: float) -> None:
        self.transport.backoff_max = seconds

    @property
    def max_reasks(self) -> int:
        """Re-asks of `chat_json` after an invalid reply."""
        return self.structured.max_reasks

    @max_reasks.setter
    def max_reasks(self, count: int) -> None:
        self.structured.max_reasks = count

    # --- public calls ---------------------------------------------------------------------------------

    async def chat(self, messages: list[dict], *, n: int = 1, key_extra: dict | None = None, json_schema: dict | None = None) -> list[str]:
        """`n` completions of `messages`, each cached as its own sample the moment it arrives.

        With `json_schema`, the samples are asked for under the strictest response_format the server
        accepts (as in chat_json) but returned unvalidated: the caller parses them.
        """
        return [s.text for s in await self.chat_samples(messages, n=n, key_extra=key_extra, json_schema=json_schema)]

    async def chat_samples(
        self, messages: list[dict], *, n: int = 1, key_extra: dict | None = None, json_schema: dict | None = None
    ) -> list[Sample]:
        """Like `chat`, with each sample's truncation mark (cut off at max_tokens), as it is cached."""
        if json_schema is not None:
            key_extra = {**(key_extra or {}), "json_schema": json_schema}
        keys = [self.chat_key(messages, key_extra, i) for i in range(n)]
        samples = self.lookup_samples(messages, n=n, key_extra=key_extra)
        self.usage.cache_hits += sum(s is not None for s in samples)
        missing = [i for i, s in enumerate(samples) if s is None]
        if missing:
            try:
                await self._fill(messages, keys, samples, missing, json_schema)
            except LLMError:
                self.usage.failures += 1
                raise
        return [s or Sample("") for s in samples]

    def lookup_chat(self, messages: list[dict], *, n: int = 1, key_extra: dict | None = None) -> list[str | None]:
        """The cached samples of a `chat` call (None where missing), without any request."""
        return [None if s is None else s.text for s in self.lookup_samples(messages, n=n, key_extra=key_extra)]

    def lookup_samples(self, messages: list[dict], *, n: int = 1, key_extra: dict | None = None) -> list[Sample | None]:
        """The cached samples of a `chat` call with their truncation marks (None where missing), without any request."""
        if self.cache is None:
            return [None] * n
        keys = [self.chat_key(messages, key_extra, i) for i in range(n)]
        found = self.cache.get_many(keys)
        return [_sample(found[k]) if k in found else None for k in keys]

    async def chat_json(
        self,
        messages: list[dict],
        schema: type[T],
        *,
        json_schema: dict | None = None,
        check: Callable[[T], None] | None = None,
        key_extra: dict | None = None,
    ) -> T:
        """A validated `schema` object; re-asks up to max_reasks times with the error shown. Only valid results are cached."""
        json_schema = json_schema or schema.model_json_schema()
        key = ResultCache.make_key(kind="json", fingerprint=self.fingerprint, messages=messages, schema=json_schema, extra=key_extra)
        cached = self._cached_json(key, schema, check)
        if cached is not None:
            self.usage.cache_hits += 1
            return cached
        try:
            value, spent = await self.structured.ask(messages, schema, json_schema, check)
        except LLMError:
            self.usage.failures += 1
            raise
        if self.cache is not None:
            self.cache.put(key, self.role, {"json": value.model_dump(mode="json")}, share(spent, 1), self.fingerprint)
        return value

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop."""
        await self.transport.aclose()

    # --- internals ----------------------------------------------------------------------------------------

    def chat_key(self, messages: list[dict], key_extra: dict | None, sample: int) -> str:
        """The cache key of sample `sample` of a `chat` call (also where a tool-using teacher answer is kept)."""
        return ResultCache.make_key(kind="chat", fingerprint=self.fingerprint, messages=messages, extra=key_extra, sample=sample)

    async def _fill(
        self, messages: list[dict], keys: list[str], texts: list[Sample | None], missing: list[int], json_schema: dict | None = None
    ) -> None:
        """Fetch the missing samples: one request with `n` where the server honours it, else one request each."""
        if len(missing) > 1 and self._n_honoured is not False:
            try:
                response, spent = await self._sample_request(messages, len(missing), self.sample_seed(missing[0]), json_schema)
            except SamplesRejected as exc:
                self._n_honoured = False
                log.info("%s: the server refused n=%d (%s); asking for each sample separately", self.role, len(missing), exc.message)
            else:
                choices = response.choices
                self._n_honoured = len(choices) >= len(missing)
                if not self._n_honoured:
                    log.info("%s: the server ignored n=%d; asking for each sample separately", self.role, len(missing))
                for index, choice in zip(missing, choices, strict=False):
                    self._store_sample(keys[index], texts, index, choice, share(spent, len(choices)))
            missing = [i for i in missing if texts[i] is None]
        await asyncio.gather(*(self._fetch_sample(messages, keys, texts, i, json_schema) for i in missing))

    async def _fetch_sample(
        self, messages: list[dict], keys: list[str], texts: list[Sample | None], index: int, json_schema: dict | None = None
    ) -> None:
        response, spent = await self._sample_request(messages, 1, self.sample_seed(index), json_schema)
        self._store_sample(keys[index], texts, index, response.choices[0], share(spent, 1))

    async def _sample_request(self, messages: list[dict], n: int, seed: int | None, json_schema: dict | None):
        if json_schema is None:
            return await self.transport.create(messages, n=n, seed=seed)
        return await self.structured.create(messages, json_schema, "output", n=n, seed=seed)

    def sample_seed(self, index: int) -> int | None:
        """Sample i is drawn with seed + i, so separately requested samples differ and each has its own seed."""
        return None if self.endpoint.seed is None else self.endpoint.seed + index

    def _store_sample(self, key: str, texts: list[Sample | None], index: int, choice: Any, usage: dict) -> None:
        """Keep one choice, with its finish reason: a sample cut off at max_tokens is cached too, marked as such."""
        text, finish_reason = choice.message.content or "", getattr(choice, "finish_reason", None)
        texts[index] = Sample(text, truncated=finish_reason == "length")
        if self.cache is not None:
            self.cache.put(key, self.role, {"text": text, "finish_reason": finish_reason}, usage, self.fingerprint)

    def _cached_json(self, key: str, schema: type[T], check: Callable[[T], None] | None) -> T | None:
        if self.cache is None or (stored := self.cache.get(key)) is None:
            return None
        try:
            return validate(stored["json"], schema, check)
        except (ValueError, KeyError) as exc:
            log.warning("%s: a cached result no longer validates (%s); asking again", self.role, self.transport.scrub(describe_error(exc)))
            return None


def _sample(record: dict) -> Sample:
    """A cached chat sample; records made before finish reasons were kept count as complete."""
    return Sample(record["text"], truncated=record.get("finish_reason") == "length")
