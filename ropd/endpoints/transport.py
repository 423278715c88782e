"""One OpenAI-compatible endpoint for one role: the SDK, retries, rate limits and usage.

    transport = Transport(endpoint, role="judge", prices=config.prices)
    response, spent = await transport.create(messages, n=1)

Transient failures (timeouts, dropped connections, 408/409/429/5xx, a 200 whose body is no chat
completion) are retried with capped exponential backoff and jitter, honouring Retry-After; the SDK's
own retries are off so every retry is counted. Concurrency, requests per minute and tokens per minute
are limited per event loop (asyncio primitives and HTTP pools cannot cross loops). Every attempt adds
to `usage` (requests, tokens, cost, seconds). The API key is sent in the Authorization header only and
scrubbed from every message this module writes (`scrub`).

Structured output and cached sampling are built on top of it in ropd.endpoints.llm.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import Any

import openai
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ropd.config import EndpointConfig, ModelAlias, Price, redact_url
from ropd.endpoints.models import ModelError, resolve_model
from ropd.types import Usage

log = logging.getLogger(__name__)

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"
RETRY_STATUS = {408, 409, 429}
MAX_RETRY_AFTER = 600.0
# what a cached result records
SPENT_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "seconds", "unpriced_requests")


class LLMError(RuntimeError):
    """A call that failed after all retries and re-asks; names the role, model and last error (never a key)."""


class MalformedResponse(Exception):
    """A 200 response whose body is not a chat completion (a proxy's error page, a cut-off body): retried."""


class Rejected(Exception):
    """The server refused a request (400/422) for a reason the caller can work around; `message` says which call failed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class FormatRejected(Rejected):
    """The server refused a request's response_format."""


class SamplesRejected(Rejected):
    """The server refused a request for several samples (`n`): ask for them one at a time instead."""


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


def share(spent: Usage, parts: int) -> dict[str, float]:
    """One of `parts` equal shares of what requests cost, as a cached result records it (SPENT_FIELDS)."""
    return {name: getattr(spent, name) / parts for name in SPENT_FIELDS}


# --- limits ----------------------------------------------------------------------------------------------


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


# --- the transport -------------------------------------------------------------------------------------


class Transport:
    """Chat-completion requests to one endpoint for one role, with retries, limits and usage accounted in `usage`."""

    backoff_initial = 1.0
    backoff_max = 60.0

    def __init__(
        self,
        endpoint: EndpointConfig,
        *,
        role: str,
        prices: dict[str, Price] | None = None,
        aliases: dict[str, ModelAlias] | None = None,
    ):
        self.endpoint = endpoint
        self.role = role
        self.model, self.base_url = resolve_endpoint(endpoint, aliases)
        prices = prices or {}
        self.price: Price | None = prices.get(self.model) or prices.get(endpoint.model)
        self.usage = Usage()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    async def create(
        self, messages: list[dict], *, n: int, seed: int | None = None, response_format: dict | None = None, tools: list[dict] | None = None
    ):
        """One chat completion with retries; returns (response, what it cost). `tools`: OpenAI tool schemas the model may call.

        Raises SamplesRejected (n > 1) or FormatRejected (with a response_format) when the server refuses the
        request with 400/422, and LLMError for every other failure once the retries are spent.
        """
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
        if tools:
            request["tools"] = tools
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
                raise SamplesRejected(self._failure(exc, 1)) from None  # e.g. more samples than the server decodes at once
            if exc.status_code in (400, 422) and response_format is not None:
                raise FormatRejected(self._failure(exc, 1)) from None
            raise LLMError(self._failure(exc, 1 if not is_retryable(exc) else self.endpoint.max_retries + 1)) from None
        except (openai.OpenAIError, TimeoutError, MalformedResponse) as exc:
            raise LLMError(self._failure(exc, self.endpoint.max_retries + 1 if is_retryable(exc) else 1)) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.close()

    def scrub(self, text: str) -> str:
        """Remove the API key (and any credentials in the base URL) from a message."""
        key = os.environ.get(self.endpoint.api_key_env)
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        if self.base_url:
            text = text.replace(self.base_url, redact_url(self.base_url) or "")
        return text

    # --- internals ----------------------------------------------------------------------------------------

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
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "unpriced_requests"):
            setattr(self.usage, name, getattr(self.usage, name) + getattr(spent, name))
        if not response.choices:
            raise LLMError(f"{self.role} ({self.model}): the server returned no choices")
        return response, spent

    def _spent(self, response: Any, seconds: float) -> Usage:
        usage = response.usage
        prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
        completion_tokens = (usage.completion_tokens or 0) if usage else 0
        details = getattr(usage, "prompt_tokens_details", None)
        cached_tokens = (getattr(details, "cached_tokens", None) or 0) if details else 0
        cost = (prompt_tokens * self.price.input + completion_tokens * self.price.output) / 1e6 if self.price else 0.0
        unpriced = 0 if self.price else 1
        return Usage(
            requests=1,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cost_usd=cost,
            seconds=seconds,
            unpriced_requests=unpriced,
        )

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
        log.warning("%s (%s): %s; retry %d in %.1fs", self.role, self.model, self.scrub(_summary(exc)), state.attempt_number, wait)

    def _failure(self, exc: BaseException, attempts: int) -> str:
        hint = ""
        if isinstance(exc, openai.AuthenticationError):
            hint = f" (check the API key in ${self.endpoint.api_key_env})"
        where = redact_url(self.base_url)
        return self.scrub(f"{self.role} call to {self.model} at {where} failed after {attempts} attempt(s): {_summary(exc)}{hint}")


def _summary(exc: BaseException | None) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
