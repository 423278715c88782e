"""Old spellings of command-line flags, kept working for one release with a warning that names the new flag. Used by
the config's generated flags and by the subcommands, so it stands outside `ropd/cli/` (importing that package builds
every subcommand, which imports the config).

    p.add_argument("--output", metavar="FILE", help="...")
    add_deprecated(p, "--json", "--output")     # `--json F` still works: it warns on stderr, then does what `--output F` does

An old spelling is hidden from --help; it takes the values its new flag takes and stores them where that flag does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["DeprecatedSpelling", "add_deprecated"]


class DeprecatedSpelling(argparse.Action):
    """An old spelling of the flag `new`: warns on stderr, then runs `new`'s own action."""

    def __init__(self, option_strings: list[str], dest: str, new: argparse.Action, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        flag = next(s for s in self.new.option_strings if s.startswith("--"))
        print(f"warning: {option_string} is deprecated and will be removed in the next release; use {flag}", file=sys.stderr)
        self.new(parser, namespace, values, flag)


def add_deprecated(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: str) -> None:
    """Make `old` a deprecated spelling of the flag `new`, already added to `parser`."""
    target = next(action for action in parser._actions if new in action.option_strings)
    parser.add_argument(
        old,
        action=DeprecatedSpelling,
        new=target,
        dest=target.dest,
        nargs=target.nargs,
        type=target.type,
        choices=target.choices,
        metavar=target.metavar,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
