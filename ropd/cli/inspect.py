"""`ropd inspect`: a static HTML report of a run or a bench."""

from __future__ import annotations

import argparse

from ropd.cli.common import (
    out,
)
from ropd.data import DataError
from ropd.flags import add_deprecated


def cmd_inspect(args: argparse.Namespace) -> int:
    """Write a static HTML report of a run folder (config, usage, curves, every group's rubric, verdicts and rewards)
    or of a bench folder (curves, per-seed table, links to each arm's run report). It opens from disk: no server, no
    network. Prints the path of its index.html on stdout."""
    from ropd.report.inspect import InspectError, build_report

    try:
        index = build_report(args.path, args.output)
    except InspectError as exc:
        raise DataError(str(exc)) from None
    out.print(str(index), highlight=False, soft_wrap=True)
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="Write a static HTML report of a run or bench folder.", description=cmd_inspect.__doc__)
    p.add_argument("path", metavar="RUN_DIR", help="A run's output folder, or a bench's output_dir (it holds results.json).")
    p.add_argument("--output", metavar="DIR", help="Folder of the report (default: RUN_DIR/report).")
    add_deprecated(p, "--out", "--output")
    p.set_defaults(func=cmd_inspect)
