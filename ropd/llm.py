"""One client for every OpenAI-compatible endpoint: retries, rate limits, structured output, cache, usage.

    client = LLMClient(endpoint, role="judge", cache=cache, prices=config.prices)
    texts = await client.chat(messages, n=4, key_extra={"prompt_id": "p1"})
    rubric = await client.chat_json(messages, Rubric, check=lambda r: r.check_bounds(4, 12, 1, 5))

Transient failures (timeouts, dropped connections, 408/409/429/5xx) are retried with capped
exponential backoff and jitter, honouring Retry-After; the SDK's own retries are off so every
retry is counted. Structured output asks for the strictest response_format the server accepts
(json_schema, then json_object, then none), parses tolerantly, validates with pydantic and re-asks
with the error shown. Results are cached by content; a sample cut off at max_tokens is cached with
its finish reason, so callers can tell it from a complete one (`Sample.truncated`). The API key is
sent in the Authorization header only and scrubbed from every message this module writes.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ropd.cache import ResultCache
from ropd.config import EndpointConfig, ModelAlias, Price, redact_url
from ropd.models import ModelError, resolve_model
from ropd.prompts import load_template
from ropd.types import Usage

T = TypeVar("T", bound=BaseModel)

log = logging.getLogger(__name__)

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"
RETRY_STATUS = {408, 409, 429}
JSON_MODES = ("json_schema", "json_object", "text")
MAX_RETRY_AFTER = 600.0
REASK_TEMPLATE = "reask"


class LLMError(RuntimeError):
    """A call that failed after all retries and re-asks; names the role, model and last error (never a key)."""


class MalformedResponse(Exception):
    """A 200 response whose body is not a chat completion (a proxy's error page, a cut-off body): retried."""


# --- endpoint resolution ----------------------------------------------------------------------------


def resolve_endpoint(endpoint: EndpointConfig, aliases: dict[str, ModelAlias] | None = None) -> tuple[str, str]:
    """(model name sent to the server, base URL).

    With a base URL the model name passes through verbatim; otherwise an api-kind alias gives the
    name and maybe a base URL, then OPENAI_BASE_URL, then the OpenAI API.
    """
    if endpoint.base_url:
        return endpoint.model, endpoint.base_url
    spec = resolve_model(endpoint.model, aliases)
    if spec.kind != "api":
        raise ModelError(
            f"'{endpoint.model}' is a local model ({spec.kind}); calling it needs an OpenAI-compatible server: "
            f"start one (`ropd serve {endpoint.model}`, vLLM, `transformers serve`) and pass its base URL"
        )
    return spec.target, spec.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL


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


# --- transient errors and backoff ------------------------------------------------------------------------


def is_retryable(exc: BaseException) -> bool:
    """Timeouts, connection errors, 408/409/429 and 5xx are worth another try; anything else is not."""
    if isinstance(exc, (openai.APIConnectionError, TimeoutError, MalformedResponse, openai.APIResponseValidationError)):
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code in RETRY_STATUS or exc.status_code >= 500)


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The wait a server asked for (retry-after-ms or Retry-After, seconds or an HTTP date), if any."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                moment = email.utils.parsedate_to_datetime(value)
                return max(0.0, moment.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


def estimate_tokens(request: dict[str, Any]) -> int:
    """Tokens a request may use, counted before it is sent (as providers do): prompt characters / 4 plus max_tokens per choice."""
    prompt_chars = sum(len(str(m.get("content") or "")) for m in request["messages"])
    return prompt_chars // 4 + request["max_tokens"] * request.get("n", 1)


@dataclass(frozen=True)
class Sample:
    """One completion as cached: its text, and whether the server cut it off at max_tokens (finish reason "length")."""

    text: str
    truncated: bool = False


@dataclass
class _Spent:
    """What one or more requests cost."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def plus(self, other: _Spent) -> _Spent:
        return _Spent(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def share(self, parts: int) -> dict[str, float]:
        return {f: getattr(self, f) / parts for f in self.__dataclass_fields__}


@dataclass
class _LoopState:
    """Objects bound to one event loop (asyncio primitives and the HTTP pool cannot cross loops)."""

    client: openai.AsyncOpenAI
    slots: asyncio.Semaphore
    request_rate: AsyncLimiter | None
    token_rate: AsyncLimiter | None


def _per_second_limiter(per_minute: float) -> AsyncLimiter:
    """A bucket holding one second's share of a per-minute limit (at least 1): providers enforce limits per second too."""
    capacity = max(1.0, per_minute / 60)
    return AsyncLimiter(capacity, capacity * 60 / per_minute)


async def _acquire(limiter: AsyncLimiter, amount: float) -> None:
    """Take `amount` from a bucket, in bucket-sized pieces when it is larger than the bucket."""
    while amount > 0:
        piece = min(amount, limiter.max_rate)
        await limiter.acquire(piece)
        amount -= piece


# --- the client --------------------------------------------------------------------------------------


class LLMClient:
    """Chat completions against one endpoint for one role, with usage accounted in `usage`."""

    backoff_initial = 1.0
    backoff_max = 60.0

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
        self.endpoint = endpoint
        self.role = role
        self.cache = cache
        self.max_reasks = max_reasks
        self.model, self.base_url = resolve_endpoint(endpoint, aliases)
        prices = prices or {}
        self.price = prices.get(self.model) or prices.get(endpoint.model)
        self.usage = Usage()
        self.fingerprint = {
            "role": role,
            "model": self.model,
            "endpoint": identity or redact_url(self.base_url),
            "temperature": endpoint.temperature,
            "top_p": endpoint.top_p,
            "max_tokens": endpoint.max_tokens,
            "seed": endpoint.seed,
        }
        self._json_mode = 0
        self._n_honoured: bool | None = None
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"LLMClient(role={self.role!r}, model={self.model!r}, base_url={redact_url(self.base_url)!r})"

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
        keys = [self._chat_key(messages, key_extra, i) for i in range(n)]
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
        keys = [self._chat_key(messages, key_extra, i) for i in range(n)]
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
            value, spent = await self._ask_until_valid(messages, schema, json_schema, check)
        except LLMError:
            self.usage.failures += 1
            raise
        if self.cache is not None:
            self.cache.put(key, self.role, {"json": value.model_dump(mode="json")}, spent.share(1), self.fingerprint)
        return value

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.close()

    # --- chat internals ------------------------------------------------------------------------------

    def _chat_key(self, messages: list[dict], key_extra: dict | None, sample: int) -> str:
        return ResultCache.make_key(kind="chat", fingerprint=self.fingerprint, messages=messages, extra=key_extra, sample=sample)

    async def _fill(
        self, messages: list[dict], keys: list[str], texts: list[Sample | None], missing: list[int], json_schema: dict | None = None
    ) -> None:
        """Fetch the missing samples: one request with `n` where the server honours it, else one request each."""
        if len(missing) > 1 and self._n_honoured is not False:
            try:
                response, spent = await self._sample_request(messages, len(missing), self._sample_seed(missing[0]), json_schema)
            except _NRejected as exc:
                self._n_honoured = False
                log.info("%s: the server refused n=%d (%s); asking for each sample separately", self.role, len(missing), exc.message)
            else:
                choices = response.choices
                self._n_honoured = len(choices) >= len(missing)
                if not self._n_honoured:
                    log.info("%s: the server ignored n=%d; asking for each sample separately", self.role, len(missing))
                for index, choice in zip(missing, choices, strict=False):
                    self._store_sample(keys[index], texts, index, choice, spent.share(len(choices)))
            missing = [i for i in missing if texts[i] is None]
        await asyncio.gather(*(self._fetch_sample(messages, keys, texts, i, json_schema) for i in missing))

    async def _fetch_sample(
        self, messages: list[dict], keys: list[str], texts: list[Sample | None], index: int, json_schema: dict | None = None
    ) -> None:
        response, spent = await self._sample_request(messages, 1, self._sample_seed(index), json_schema)
        self._store_sample(keys[index], texts, index, response.choices[0], spent.share(1))

    async def _sample_request(self, messages: list[dict], n: int, seed: int | None, json_schema: dict | None):
        if json_schema is None:
            return await self._create(messages, n=n, seed=seed)
        return await self._create_json(messages, json_schema, "output", n=n, seed=seed)

    def _sample_seed(self, index: int) -> int | None:
        """Sample i is drawn with seed + i, so separately requested samples differ and each has its own seed."""
        return None if self.endpoint.seed is None else self.endpoint.seed + index

    def _store_sample(self, key: str, texts: list[Sample | None], index: int, choice: Any, usage: dict) -> None:
        """Keep one choice, with its finish reason: a sample cut off at max_tokens is cached too, marked as such."""
        text, finish_reason = choice.message.content or "", getattr(choice, "finish_reason", None)
        texts[index] = Sample(text, truncated=finish_reason == "length")
        if self.cache is not None:
            self.cache.put(key, self.role, {"text": text, "finish_reason": finish_reason}, usage, self.fingerprint)

    # --- structured output internals ---------------------------------------------------------------------

    def _cached_json(self, key: str, schema: type[T], check: Callable[[T], None] | None) -> T | None:
        if self.cache is None or (stored := self.cache.get(key)) is None:
            return None
        try:
            return self._validate(stored["json"], schema, check)
        except (ValueError, KeyError) as exc:
            log.warning("%s: a cached result no longer validates (%s); asking again", self.role, self._scrub(describe_error(exc)))
            return None

    @staticmethod
    def _validate(data: Any, schema: type[T], check: Callable[[T], None] | None) -> T:
        value = schema.model_validate(data)
        if check is not None:
            check(value)
        return value

    async def _ask_until_valid(
        self, messages: list[dict], schema: type[T], json_schema: dict, check: Callable[[T], None] | None
    ) -> tuple[T, _Spent]:
        conversation, spent, error, finish_reason = list(messages), _Spent(), "", None
        for _ in range(self.max_reasks + 1):
            text, finish_reason, cost = await self._json_request(conversation, json_schema, schema.__name__)
            spent = spent.plus(cost)
            try:
                return self._validate(extract_json(text), schema, check), spent
            except ValueError as exc:
                error = describe_error(exc)
                log.info("%s: output failed validation (%s); re-asking", self.role, self._scrub(error))
                reask = load_template(REASK_TEMPLATE, {"error", "schema", "cut_off", "max_tokens"}).render(
                    error=error, schema=json.dumps(json_schema), cut_off=finish_reason == "length", max_tokens=self.endpoint.max_tokens
                )
                conversation = [*messages, {"role": "assistant", "content": text}, *reask]
        cut_off = f" (its last reply was cut off at max_tokens={self.endpoint.max_tokens}: raise it)" if finish_reason == "length" else ""
        raise LLMError(
            self._scrub(f"{self.role} ({self.model}) gave no valid {schema.__name__} after {self.max_reasks} re-asks: {error}{cut_off}")
        )

    async def _json_request(self, messages: list[dict], json_schema: dict, name: str) -> tuple[str, str | None, _Spent]:
        """One completion (text, finish reason, cost), asking for the strictest response_format this server has not rejected."""
        response, spent = await self._create_json(messages, json_schema, name)
        choice = response.choices[0]
        return choice.message.content or "", choice.finish_reason, spent

    async def _create_json(self, messages: list[dict], json_schema: dict, name: str, *, n: int = 1, seed: int | None = None):
        """_create under the strictest response_format this server has not rejected."""
        first_mode = self._json_mode
        while True:
            mode = self._json_mode
            try:
                return await self._create(messages, n=n, seed=seed, response_format=self._response_format(mode, json_schema, name))
            except _Rejected:
                self._json_mode = max(self._json_mode, mode + 1)
                log.info("%s: the server rejected response_format %s; trying %s", self.role, JSON_MODES[mode], JSON_MODES[mode + 1])
                continue
            except LLMError:
                if mode > first_mode and JSON_MODES[mode] == "text":  # plain requests fail too: the 400 was not about response_format
                    self._json_mode = first_mode
                raise

    @staticmethod
    def _response_format(mode: int, json_schema: dict, name: str) -> dict | None:
        if JSON_MODES[mode] == "json_schema":
            safe_name = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "output"
            return {"type": "json_schema", "json_schema": {"name": safe_name, "schema": json_schema, "strict": False}}
        if JSON_MODES[mode] == "json_object":
            return {"type": "json_object"}
        return None

    # --- requests, retries, limits ------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            endpoint = self.endpoint
            state = _LoopState(
                client=openai.AsyncOpenAI(
                    api_key=self._api_key(),
                    base_url=self.base_url,
                    timeout=endpoint.timeout,
                    max_retries=0,
                    http_client=openai.DefaultAsyncHttpxClient(),  # unlike the SDK's own, it schedules no close on a later loop
                ),
                slots=asyncio.Semaphore(endpoint.max_concurrency),
                request_rate=_per_second_limiter(endpoint.requests_per_minute) if endpoint.requests_per_minute else None,
                token_rate=_per_second_limiter(endpoint.tokens_per_minute) if endpoint.tokens_per_minute else None,
            )
            self._states[loop] = state
        return state

    def _api_key(self) -> str:
        key = os.environ.get(self.endpoint.api_key_env)
        if key:
            return key
        if self.endpoint.base_url or self.base_url != OPENAI_DEFAULT_URL:
            return PLACEHOLDER_KEY
        raise LLMError(f"{self.role} ({self.model}): the environment variable {self.endpoint.api_key_env} holding the API key is not set")

    def _scrub(self, text: str) -> str:
        """Remove the API key (and any credentials in the base URL) from a message."""
        key = os.environ.get(self.endpoint.api_key_env)
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        if self.base_url:
            text = text.replace(self.base_url, redact_url(self.base_url) or "")
        return text

    async def _create(self, messages: list[dict], *, n: int, seed: int | None = None, response_format: dict | None = None):
        """One chat completion with retries; returns (response, what it cost)."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.endpoint.temperature,
            "top_p": self.endpoint.top_p,
            "max_tokens": self.endpoint.max_tokens,
        }
        if n > 1:
            request["n"] = n
        if (seed := self.endpoint.seed if seed is None else seed) is not None:
            request["seed"] = seed
        if response_format is not None:
            request["response_format"] = response_format
        state = self._state()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.endpoint.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(state, request)
        except openai.APIStatusError as exc:
            if exc.status_code in (400, 422) and n > 1:
                raise _NRejected(self._failure(exc, 1)) from None  # e.g. more samples than the server decodes at once
            if exc.status_code in (400, 422) and response_format is not None:
                raise _Rejected(self._failure(exc, 1)) from None
            raise LLMError(self._failure(exc, 1 if not is_retryable(exc) else self.endpoint.max_retries + 1)) from None
        except (openai.OpenAIError, TimeoutError, MalformedResponse) as exc:
            raise LLMError(self._failure(exc, self.endpoint.max_retries + 1 if is_retryable(exc) else 1)) from None
        raise AssertionError("unreachable")

    async def _attempt(self, state: _LoopState, request: dict[str, Any]):
        async with state.slots:
            if state.request_rate is not None:
                await state.request_rate.acquire()
            if state.token_rate is not None:
                await _acquire(state.token_rate, estimate_tokens(request))
            started = time.monotonic()
            self.usage.requests += 1
            try:
                async with asyncio.timeout(self.endpoint.timeout):
                    response = await state.client.chat.completions.create(**request)
            except json.JSONDecodeError as exc:
                raise MalformedResponse(f"the response body is not JSON ({exc})") from None
            finally:
                self.usage.seconds += time.monotonic() - started
        spent = self._spent(response, time.monotonic() - started)
        for name in ("prompt_tokens", "completion_tokens", "cost_usd"):
            setattr(self.usage, name, getattr(self.usage, name) + getattr(spent, name))
        if not response.choices:
            raise LLMError(f"{self.role} ({self.model}): the server returned no choices")
        return response, spent

    def _spent(self, response: Any, seconds: float) -> _Spent:
        usage = response.usage
        prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
        completion_tokens = (usage.completion_tokens or 0) if usage else 0
        cost = (prompt_tokens * self.price.input + completion_tokens * self.price.output) / 1e6 if self.price else 0.0
        return _Spent(1, prompt_tokens, completion_tokens, cost, seconds)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc)
        if asked is not None:
            return min(asked, MAX_RETRY_AFTER)
        return wait_exponential_jitter(multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial)(state)

    def _before_retry(self, state: RetryCallState) -> None:
        self.usage.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s (%s): %s; retry %d in %.1fs", self.role, self.model, self._scrub(_summary(exc)), state.attempt_number, wait)

    def _failure(self, exc: BaseException, attempts: int) -> str:
        hint = ""
        if isinstance(exc, openai.AuthenticationError):
            hint = f" (check the API key in ${self.endpoint.api_key_env})"
        where = redact_url(self.base_url)
        return self._scrub(f"{self.role} call to {self.model} at {where} failed after {attempts} attempt(s): {_summary(exc)}{hint}")


class _Rejected(Exception):
    """The server refused a request's response_format (400/422)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _NRejected(Exception):
    """The server refused a request for several samples (400/422): ask for them one at a time instead."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _sample(record: dict) -> Sample:
    """A cached chat sample; records made before finish reasons were kept count as complete."""
    return Sample(record["text"], truncated=record.get("finish_reason") == "length")


def _summary(exc: BaseException | None) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
