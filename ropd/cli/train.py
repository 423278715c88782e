"""`ropd train`: a training run (or its cost estimate, `--dry-run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropd.cli.common import (
    err,
    out,
)


def cmd_train(args: argparse.Namespace) -> int:
    """Train the student: rubric OPD by default; --method picks opd, sod or grpo."""
    from ropd.config import load_config, overrides_from_args
    from ropd.endpoints.cache import CacheError
    from ropd.training.run import SpendingLimitReached, TrainingError, dry_run, train

    overrides = overrides_from_args(args)
    config = load_config(train_config_path(args.config, overrides), overrides)
    if args.dry_run:  # the resolved config first: it shows even when the estimate cannot be made (an offline Hub dataset)
        from ropd.config import dump_config
        from ropd.training.costs import print_estimate

        out.print("# the resolved run config (defaults, then --config, then flags)", highlight=False)
        out.print(dump_config(config), markup=False, highlight=False)
        print_estimate(dry_run(config), "estimated API usage (dry run: nothing was called)", stderr=False)
        return 0
    try:
        final = train(config)
    except (CacheError, TrainingError) as exc:  # an unusable cache is bad input (2); a run that cannot go on failed (1)
        label = "stopped" if isinstance(exc, SpendingLimitReached) else "error"
        err.print(f"{label}: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2 if isinstance(exc, CacheError) else 3 if isinstance(exc, SpendingLimitReached) else 1
    out.print(str(final), highlight=False)
    return 0


RUN_CONTROL = {"output.resume"}  # flags that leave `ropd train`'s config source as it is


def train_config_path(given: str | None, overrides: dict) -> Path | None:
    """The YAML file `ropd train` starts from: --config; with --resume, the run's saved config.yaml; with no flag but
    --resume, the embedded default (configs/default.yaml); else none (the library defaults)."""
    from ropd.config import DEFAULT_CONFIG, OutputConfig
    from ropd.training.resume import saved_config

    if given:
        return Path(given)
    if overrides.get("output.resume") and (saved := saved_config(Path(overrides.get("output.dir") or OutputConfig().dir))):
        err.print(f"--resume without --config: continuing the run's saved config {saved}", markup=False, highlight=False)
        return saved
    return DEFAULT_CONFIG if set(overrides) <= RUN_CONTROL else None


def add_train(sub: argparse._SubParsersAction) -> None:
    from ropd.config import add_config_flags

    p = sub.add_parser(
        "train",
        help="Train a student on-policy from a teacher (rubric OPD by default).",
        description=cmd_train.__doc__
        + " With no arguments at all (or only --resume) it runs configs/default.yaml, the offline demo. Otherwise it starts "
        "from the published settings shown below, then --config FILE (with --resume and no --config: the run's saved "
        "config.yaml), then flags. --resume refuses a config that changed anything but the fields a resumed run may change.",
    )
    p.add_argument("--config", help="YAML run config; flags override its values. With --resume and no --config: the run's saved config.")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the resolved config, then the estimated API calls, tokens and cost per role of this run (same config "
        "and flags), and exit: reads the dataset and the student's tokenizer, renders the real rubricator and judge "
        "prompts, calls nothing.",
    )
    add_config_flags(p)
    p.set_defaults(func=cmd_train)
