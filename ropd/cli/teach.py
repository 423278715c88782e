"""`ropd teach`: fetch teacher answers into the cache."""

from __future__ import annotations

import argparse
import json
import sys

from ropd.cli.common import (
    err,
)
from ropd.flags import add_deprecated


def cmd_teach(args: argparse.Namespace) -> int:
    """Fetch k teacher answers per prompt into the run's result cache; print a JSON summary.

    Every answer is stored the moment it arrives, so an interrupted run, rerun, repeats no call.
    A local teacher (alias or path, no --teacher-base-url) is served on loopback for the duration.
    """

    from ropd.config import load_config, overrides_from_args
    from ropd.endpoints.cache import CacheError
    from ropd.endpoints.llm import LLMError
    from ropd.reward.teacher import teach

    config = load_config(args.config, overrides_from_args(args))
    try:
        summary = teach(config, progress=not args.quiet)
    except (CacheError, LLMError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2 if isinstance(exc, CacheError) else 1
    sys.stdout.write(json.dumps(summary) + "\n")
    if "error" in summary:
        err.print(f"error: {summary['error']}", markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0


def add_teach(sub: argparse._SubParsersAction) -> None:
    from ropd.config import add_config_flags

    p = sub.add_parser(
        "teach", help="Fetch k teacher answers per prompt into the cache (prints a JSON summary).", description=cmd_teach.__doc__
    )
    p.add_argument("--config", help="YAML run config; flags override its values.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    add_config_flags(p, ("teacher", "data", "output"))
    add_deprecated(p, "-k", "--num-teacher-answers")  # -k is pass@k in `ropd eval`
    p.set_defaults(func=cmd_teach)
