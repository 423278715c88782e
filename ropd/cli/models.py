"""`ropd models`: the model aliases."""

from __future__ import annotations

import argparse

from rich.table import Table

from ropd.cli.common import (
    out,
)


def cmd_models(args: argparse.Namespace) -> int:
    """List model aliases and what they resolve to."""
    from ropd.endpoints.models import alias_table

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
