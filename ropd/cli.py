"""The `ropd` command line: parses arguments and calls the library, nothing more.

stdout carries each command's result; progress, logs and errors go to stderr.
Exit codes: 0 success, 1 the work failed, 2 bad input (arguments, config, data files).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from ropd.config import ConfigError
from ropd.data import DataError
from ropd.models import ModelError

err = Console(stderr=True)
out = Console()

BAD_INPUT = (ConfigError, DataError)


def cmd_models(args: argparse.Namespace) -> int:
    """List model aliases and what they resolve to."""
    from ropd.models import alias_table

    table = Table(title="ropd model aliases")
    for column in ("alias", "kind", "resolves to", "description"):
        table.add_column(column)
    for name, spec in alias_table().items():
        target = spec.target if spec.kind != "api" else f"{spec.target} @ {spec.base_url or 'OPENAI_BASE_URL or api.openai.com'}"
        table.add_row(name, spec.kind, target, spec.description)
    out.print(table)
    return 0


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="List model aliases and what they resolve to.", description=cmd_models.__doc__)
    p.set_defaults(func=cmd_models)


# Each entry adds one subcommand. A subcommand is listed only once it works.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_models]


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
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    except ModelError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
