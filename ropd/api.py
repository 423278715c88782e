"""Helpers of the public API (`ropd/__init__.py`) that the command line does not need.

with ExitStack() as stack:
    reward = rubric_reward(config, stack=stack)   # a TRL reward function
    GRPOTrainer(model=..., reward_funcs=[reward, ...], ...).train()
"""

from __future__ import annotations

import atexit
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

from ropd.config import RunConfig
from ropd.data import load_prompts
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.models import local_path
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.setup import build_rubric_reward, serve_local_models
from ropd.reward.teacher import cache_path
from ropd.types import PromptRow


def rubric_reward(
    config: RunConfig,
    prompts: Iterable[PromptRow] | None = None,
    *,
    cache: ResultCache | None = None,
    stack: ExitStack | None = None,
    groups_log: str | Path | None = None,
) -> RubricReward:
    """ropd's rubric reward as a TRL reward function (pass it in `reward_funcs`), built from a run config.

    `prompts`: the rows whose ids, questions and reference answers the reward looks up (default: the config's
    dataset); a prompt it does not know is scored from the prompt the trainer passes. `cache`: the result cache
    (default: the config's, <output dir>/cache.sqlite). Local teacher or judge models (packaged, paths, Hub ids) are
    served on loopback until `stack` closes (without one, until the process exits). `groups_log`: a groups.jsonl
    file every call appends its groups to, for `ropd inspect`.
    """
    if prompts is None:
        prompts = load_prompts(config.data.dataset, config.data.split, config.data.max_prompts, config.data.system_prompt)
    if cache is None:
        path = cache_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = ResultCache(path)
    if stack is None:
        stack = ExitStack()
        atexit.register(stack.close)
    urls = serve_local_models(config, stack)
    log = Path(groups_log) if groups_log is not None else None
    teacher_url, judge_url = urls.get("teacher"), urls.get("judge")
    return build_rubric_reward(config, prompts, cache, teacher_base_url=teacher_url, judge_base_url=judge_url, groups_log=log)


def model_path(name: str, config: RunConfig | None = None) -> str:
    """The local folder of a model alias (packaged and random models are made on first use), a path or a Hub id as given."""
    return local_path(name, config.models if config is not None else None)
