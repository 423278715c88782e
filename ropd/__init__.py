"""ropd: rubric-based on-policy distillation on TRL.

The public API is what this module exports (`__all__`, typed: the package ships `py.typed`); every other name,
in any submodule, is private and may change without notice.

    import ropd

    config = ropd.load_config("run.yaml", {"training.max_steps": 10})
    ropd.train(config)                                  # what `ropd train` does
    reward = ropd.rubric_reward(config)                 # a TRL reward function, for your own GRPOTrainer
    print(ropd.dry_run(config).total())                 # the estimated cost, before anything is called

Prompt templates (`ropd/templates/`), the shipped run configs and the model alias table
(`ropd/configs/`) are package data, so an installed wheel finds them without a source checkout.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("ropd")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"

# name -> module; imported on first use, so `import ropd` stays light (the trainers import torch and TRL)
_EXPORTS = {
    # the run configuration
    "RunConfig": "ropd.config",
    "EndpointConfig": "ropd.config",
    "TeacherConfig": "ropd.config",
    "StudentConfig": "ropd.config",
    "JudgeConfig": "ropd.config",
    "DataConfig": "ropd.config",
    "TrainingConfig": "ropd.config",
    "MethodConfig": "ropd.config",
    "ToolsConfig": "ropd.config",
    "OutputConfig": "ropd.config",
    "Price": "ropd.config",
    "ModelAlias": "ropd.config",
    "PUBLISHED_JUDGE": "ropd.config",
    "ConfigError": "ropd.config",
    "load_config": "ropd.config",
    "dump_config": "ropd.config",
    # data and results
    "PromptRow": "ropd.types",
    "Rubric": "ropd.types",
    "Criterion": "ropd.types",
    "Verdict": "ropd.types",
    "Usage": "ropd.types",
    "load_prompts": "ropd.data",
    "to_dataset": "ropd.data",
    "ResultCache": "ropd.endpoints.cache",
    "model_path": "ropd.api",
    # the rubric reward and its steps
    "RubricReward": "ropd.reward.rubric_reward",
    "rubric_reward": "ropd.api",
    "induce_rubric": "ropd.reward.rubrics",
    "judge_verdicts": "ropd.reward.judge",
    "score_verdicts": "ropd.reward.scoring",
    "ScoredGroup": "ropd.reward.scoring",
    # training and its cost
    "train": "ropd.training.run",
    "dry_run": "ropd.training.run",
    "TrainingError": "ropd.training.run",
    "SpendingLimitReached": "ropd.training.run",
    "RunEstimate": "ropd.training.costs",
    "OPDTrainer": "ropd.training.opd",
    "SODTrainer": "ropd.training.opd",
}

__all__ = [
    "PUBLISHED_JUDGE",
    "ConfigError",
    "Criterion",
    "DataConfig",
    "EndpointConfig",
    "JudgeConfig",
    "MethodConfig",
    "ModelAlias",
    "OPDTrainer",
    "OutputConfig",
    "Price",
    "PromptRow",
    "ResultCache",
    "Rubric",
    "RubricReward",
    "RunConfig",
    "RunEstimate",
    "SODTrainer",
    "ScoredGroup",
    "SpendingLimitReached",
    "StudentConfig",
    "TeacherConfig",
    "ToolsConfig",
    "TrainingConfig",
    "TrainingError",
    "Usage",
    "Verdict",
    "__version__",
    "dry_run",
    "dump_config",
    "induce_rubric",
    "judge_verdicts",
    "load_config",
    "load_prompts",
    "model_path",
    "rubric_reward",
    "score_verdicts",
    "to_dataset",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ropd' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from ropd.api import model_path, rubric_reward
    from ropd.config import (
        PUBLISHED_JUDGE,
        ConfigError,
        DataConfig,
        EndpointConfig,
        JudgeConfig,
        MethodConfig,
        ModelAlias,
        OutputConfig,
        Price,
        RunConfig,
        StudentConfig,
        TeacherConfig,
        ToolsConfig,
        TrainingConfig,
        dump_config,
        load_config,
    )
    from ropd.data import load_prompts, to_dataset
    from ropd.endpoints.cache import ResultCache
    from ropd.reward.judge import judge_verdicts
    from ropd.reward.rubric_reward import RubricReward
    from ropd.reward.rubrics import induce_rubric
    from ropd.reward.scoring import ScoredGroup, score_verdicts
    from ropd.training.costs import RunEstimate
    from ropd.training.opd import OPDTrainer, SODTrainer
    from ropd.training.run import SpendingLimitReached, TrainingError, dry_run, train
    from ropd.types import Criterion, PromptRow, Rubric, Usage, Verdict
