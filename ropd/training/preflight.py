"""Check every remote endpoint a run will call before any model is loaded, so a missing key or a wrong URL stops
the run within seconds, not after the student's first batch.

Per endpoint (teacher; rubricator and judge share one) whose `check` is on: the key's environment variable must
be set where the OpenAI API is called; then one cheap request: its model list (free), and a 1-token completion
where the list is unavailable or does not name the model. Both are counted in the role's usage (`checks`; the
completion's tokens and cost too). Local models ropd serves itself are not checked here. A problem raises
EndpointError (a ConfigError: exit 2) naming the role, the variable or URL, and the server's reply; never a key.
"""

from __future__ import annotations

import os
import time

import openai

from ropd.config import ORACLE, ConfigError, EndpointConfig, RunConfig, redact_url
from ropd.endpoints.models import is_local
from ropd.endpoints.transport import OPENAI_DEFAULT_URL, PLACEHOLDER_KEY, resolve_endpoint
from ropd.training.costs import price_for
from ropd.types import Usage

CHECK_TIMEOUT = 10.0  # seconds per check request
UNAVAILABLE_LIST = {404, 405, 501}  # servers without a model list


class EndpointError(ConfigError):
    """A remote endpoint that cannot be used: its key variable is unset, it cannot be reached, or it refused a request."""


def remote_endpoints(config: RunConfig) -> dict[str, EndpointConfig]:
    """role -> endpoint for every endpoint the run calls that ropd does not serve itself (one per distinct model and URL)."""
    from ropd.reward.setup import uses_rubric_reward
    from ropd.reward.teacher import needs_local_server

    if not uses_rubric_reward(config) or config.judge.model == ORACLE:  # the oracle calls no model
        return {}
    found: dict[str, EndpointConfig] = {}
    if not needs_local_server(config) and not config.teacher.offline_only:
        found["teacher"] = config.teacher
    judge = config.judge_endpoint()
    same = "teacher" in found and (judge.model, judge.base_url) == (config.teacher.model, config.teacher.base_url)
    if not same and (judge.base_url or not is_local(judge.model, config.models)):
        found["rubricator and judge"] = judge
    return found


def check_endpoints(config: RunConfig) -> dict[str, Usage]:
    """Check every remote endpoint whose `check` is on; return what the checks used, by usage role."""
    used: dict[str, Usage] = {}
    for role, endpoint in remote_endpoints(config).items():
        if endpoint.check:
            usage_role = "teacher" if role == "teacher" else "judge"
            used.setdefault(usage_role, Usage()).add(check_endpoint(role, endpoint, config))
    return used


def check_endpoint(role: str, endpoint: EndpointConfig, config: RunConfig) -> Usage:
    """One endpoint: its key variable, then its model list or a 1-token completion (EndpointError on a problem)."""
    model, base_url = resolve_endpoint(endpoint, config.models)
    where = redact_url(base_url)
    variable = endpoint.api_key_env
    key = os.environ.get(variable)
    if not key and base_url.rstrip("/") == OPENAI_DEFAULT_URL:
        raise EndpointError(f"{role} ({model} at {where}): the environment variable {variable} holding the API key is not set")
    client = openai.OpenAI(api_key=key or PLACEHOLDER_KEY, base_url=base_url, timeout=min(endpoint.timeout, CHECK_TIMEOUT), max_retries=1)
    usage = Usage()
    try:
        usage.checks += 1
        listed = _listed_models(client)
        if listed is not None and (model in listed or not listed):
            return usage
        usage.add(_one_token(client, model, endpoint, config))
    except openai.APIConnectionError as exc:
        raise EndpointError(f"{role} ({model}): cannot reach {where}: {_scrub(str(exc), key)}") from None
    except openai.APIStatusError as exc:
        raise EndpointError(_refusal(role, model, where, variable, bool(key), exc)) from None
    finally:
        client.close()
    return usage


def _listed_models(client: openai.OpenAI) -> list[str] | None:
    """The model names the server lists, None when it has no model list."""
    try:
        return [m.id for m in client.models.list()]
    except openai.APIStatusError as exc:
        if exc.status_code in UNAVAILABLE_LIST:
            return None
        raise


def _one_token(client: openai.OpenAI, model: str, endpoint: EndpointConfig, config: RunConfig) -> Usage:
    """A 1-token completion of `model`, with what it cost."""
    started = time.monotonic()
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=1)
    prompt = response.usage.prompt_tokens if response.usage else 0
    completion = response.usage.completion_tokens if response.usage else 0
    price = price_for(endpoint, config)
    cost = (prompt * price.input + completion * price.output) / 1e6 if price else 0.0
    return Usage(
        requests=1,
        checks=1,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost,
        seconds=time.monotonic() - started,
        unpriced_requests=0 if price else 1,
    )


def _refusal(role: str, model: str, where: str | None, variable: str, key_set: bool, exc: openai.APIStatusError) -> str:
    """The message for a request the server refused: its status and reply, and what to check."""
    hint = ""
    if exc.status_code in (401, 403):
        hint = f"; check the API key in ${variable}" + ("" if key_set else f" (the environment variable {variable} is not set)")
    elif exc.status_code == 404:
        hint = f"; check the model name and the base URL {where}"
    key = os.environ.get(variable)
    return f"{role} ({model} at {where}) refused the endpoint check: HTTP {exc.status_code}: {_scrub(exc.message, key)}{hint}"


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key and len(key) >= 4 else text
