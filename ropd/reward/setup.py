"""The rubric reward built from a run config, and the loopback servers of a local teacher and judge for a run.

    reward = build_rubric_reward(config, prompts, cache)
    GRPOTrainer(..., reward_funcs=[reward])

`serve_local_models` starts the loopback servers of a local teacher and judge for the duration of a run.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from ropd.config import ORACLE, ConfigError, EndpointConfig, JudgeConfig, RunConfig
from ropd.endpoints.llm import LLMClient
from ropd.endpoints.models import is_local
from ropd.endpoints.serve import local_identity
from ropd.reward.judge import judge_endpoint
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.teacher import build_teacher_pool, needs_local_server
from ropd.training.distributed import Failure, OneProcess, Processes, exchange
from ropd.types import Criterion, PromptRow, Rubric

console = Console(stderr=True)


def check_templates(cfg: JudgeConfig) -> None:
    """Load and render the rubricator and judge templates once on a sample, so a missing file, an unknown variable
    or a bad attribute stops a run before any model is loaded (TemplateError naming the file and the variable)."""
    from ropd.reward.judge import verifier_messages
    from ropd.reward.rubrics import rubric_messages

    rubric_messages("What is 2 + 2?", ["4"], ["5"], cfg)
    sample = Rubric(criteria=[Criterion(id="c1", text="The final answer is 4.", points=1)])
    verifier_messages("What is 2 + 2?", sample, ["4", "5"], cfg)


def judge_endpoint_for(config: RunConfig, base_url: str | None) -> tuple[EndpointConfig, str | None]:
    """The judge endpoint, pointed at `base_url` when given (a local server), and its cache identity: for a local model,
    a fingerprint of its weights and how it is served (`ropd.endpoints.serve.local_identity`), not the server's URL."""
    endpoint = config.judge_endpoint()
    if base_url is None:
        return endpoint, None
    if not is_local(endpoint.model, config.models):  # not a model ropd serves: keyed by the URL, as any endpoint
        return endpoint.model_copy(update={"base_url": base_url}), None
    served = endpoint
    if endpoint.model == config.teacher.model and needs_local_server(config):  # one server per model, started for the teacher
        served = config.teacher
    identity = local_identity(endpoint.model, config.models, served.serve_dtype, served.serve_engine)
    return endpoint.model_copy(update={"base_url": base_url}), identity


def serve_local_models(config: RunConfig, stack: ExitStack, processes: Processes | None = None) -> dict[str, str]:
    """Start one loopback server per local model the run talks to; return {"teacher"/"judge": base URL}.

    With several processes (`processes`), only the first process of each machine starts them, and every other process
    on that machine gets their URLs (a loopback server serves its own machine): one server per model per machine,
    stopped when the first process's run stops. A server that fails to start stops every process with its error.
    The config is left as it is: clients get these URLs with the model name as cache identity, since
    a local server's port changes from run to run.
    """
    if not uses_rubric_reward(config) or config.judge.model == ORACLE:  # the oracle calls no model
        return {}
    processes = processes or OneProcess()
    urls: dict[str, str] = {}
    failure, error = None, None
    if processes.local_index == 0:
        try:
            urls = _start_local_servers(config, stack)
        except Exception as exc:
            failure, error = Failure.of(exc, "starting the local servers", processes.index), exc
    if processes.count == 1 and error is None:
        return urls
    shared = exchange(processes, urls, failure, error)
    return shared[processes.index - processes.local_index]  # what this machine's first process started


def _start_local_servers(config: RunConfig, stack: ExitStack) -> dict[str, str]:
    """The loopback servers of this process: one per local model, shared by the roles that use it (which must then ask
    for the same server settings: serve_engine, serve_dtype, serve_args)."""
    served: dict[str, tuple[str, str, tuple]] = {}  # model -> (URL, the role that started it, its settings)

    def url_for(role: str, endpoint: EndpointConfig) -> str:
        model = endpoint.model
        settings = (endpoint.serve_engine, endpoint.serve_dtype, tuple(endpoint.serve_args))
        if model in served:
            url, first, started = served[model]
            if started != settings:
                raise ConfigError(
                    f"{first} and {role} use the local model '{model}', which one server serves, but ask for different server "
                    f"settings (serve_engine, serve_dtype, serve_args): {list(started)} vs {list(settings)}; give both the same"
                )
            return url
        from ropd.endpoints.serve import local_server  # looked up when called, as in ropd.reward.teacher

        console.print(f"starting a local OpenAI-compatible server for {model} ...")
        log = Path(config.output.dir) / f"serve-{model.replace('/', '_')}.log"
        options = {"dtype": endpoint.serve_dtype, "engine": endpoint.serve_engine, "extra_args": endpoint.serve_args}
        server = local_server(model, models=config.models, log_path=log, **options)
        served[model] = (stack.enter_context(server), role, settings)
        return served[model][0]

    urls: dict[str, str] = {}
    if needs_local_server(config):
        urls["teacher"] = url_for("teacher", config.teacher)
    judge = config.judge_endpoint()
    if not judge.base_url and is_local(judge.model, config.models):
        urls["judge"] = url_for("judge", judge)
    return urls


def uses_rubric_reward(config: RunConfig) -> bool:
    method = config.method
    return method.name == "ropd" or (method.name == "sod" and method.sequence_reward == "rubric")


def build_rubric_reward(
    config: RunConfig,
    prompts: dict[str, PromptRow] | Iterable[PromptRow],
    cache: Any,
    teacher_base_url: str | None = None,
    judge_base_url: str | None = None,
    groups_log: Path | None = None,
) -> RubricReward:
    """A RubricReward with its teacher pool and rubricator/judge clients built from the config.

    Base URLs passed here (servers the trainer started on loopback) override the config's; their
    cache identity is the model's weights fingerprint, since a local server's port changes from run to run.
    `groups_log`: the groups.jsonl file each call appends its groups to (None: not written).
    """
    prompts = prompts if isinstance(prompts, dict) else {p.id: p for p in prompts}
    if config.judge.model == ORACLE:  # decided by code from the reference solutions: no teacher, rubricator or judge calls
        return RubricReward(config, None, None, None, prompts, groups_log=groups_log)
    if teacher_base_url is not None and not needs_local_server(config):
        config = config.model_copy(update={"teacher": config.teacher.model_copy(update={"base_url": teacher_base_url})})
    teacher = build_teacher_pool(config, cache, local_base_url=teacher_base_url)
    endpoint, identity = judge_endpoint_for(config, judge_base_url)
    common = {
        "cache": cache,
        "prices": config.prices,
        "max_reasks": config.judge.max_reasks,
        "aliases": config.models,
        "identity": identity,
    }
    rubric_client = LLMClient(endpoint, role="rubricator", **common)
    judge_client = LLMClient(judge_endpoint(endpoint, config.judge), role="judge", **common)
    return RubricReward(config, teacher, rubric_client, judge_client, prompts, groups_log=groups_log)
