"""The `ropd` command line: parses arguments and calls the library, nothing more.

stdout carries each command's result; progress, logs and errors go to stderr.
Exit codes: 0 success, 1 the work failed, 2 bad input (arguments, config, data files, an endpoint that does not answer),
3 a training run stopped at its spending limit (output.max_cost_usd; resumable).

One module per subcommand (`ropd.cli.train` for `ropd train`, ...): `cmd_X` runs it, `add_X` declares its flags.
What several commands share (consoles, flag types, the rubricator and judge call flags) is `ropd.cli.common`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ropd.cli.bench import add_bench
from ropd.cli.common import BAD_INPUT, err
from ropd.cli.eval import add_eval
from ropd.cli.inspect import add_inspect
from ropd.cli.judge import add_judge
from ropd.cli.judge_eval import add_judge_eval
from ropd.cli.models import add_models
from ropd.cli.rubric import add_rubric
from ropd.cli.serve import add_serve
from ropd.cli.teach import add_teach
from ropd.cli.train import add_train
from ropd.endpoints.models import ModelError

__all__ = ["build_parser", "main"]

# Each entry adds one subcommand. A subcommand is listed only once it works.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_models,
    add_rubric,
    add_judge,
    add_serve,
    add_train,
    add_eval,
    add_teach,
    add_bench,
    add_judge_eval,
    add_inspect,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropd", description="Rubric-based on-policy distillation: distill a teacher you can only talk to into a student you can train."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except BAD_INPUT as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except ModelError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
