"""What a run has spent, kept in usage.json, and the spending limit (output.max_cost_usd) that stops it.

`UsageLedger` adds up, by role, what earlier attempts of the run spent (usage.json, read on --resume), the
endpoint checks (ropd.training.preflight) and the reward functions' clients; `UsageWriter` writes it to usage.json after
every step, so a killed run loses at most one step's account. `SpendingLimit` checks, before each step whose
calls go out, the spend so far plus that step's upper-bound estimate against the limit, and stops the run with a
checkpoint when the limit would be passed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ropd.config import ConfigError
from ropd.training.costs import format_usd, known_cost, usage_from_record, usage_record
from ropd.types import Usage

USAGE_FILE = "usage.json"


def read_usage(path: Path) -> dict[str, Usage]:
    """Usage by role from a usage.json ({} when absent); ConfigError naming the file when it cannot be read."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {role: usage_from_record(record) for role, record in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a usage file ropd wrote ({exc}); move it away to resume without the earlier spend") from None


class UsageLedger:
    """The run's usage by role: earlier attempts (`previous`), endpoint checks (`checks`) and the reward functions."""

    def __init__(self, previous: dict[str, Usage] | None = None):
        self.previous = previous or {}
        self.checks: dict[str, Usage] = {}
        self.sources: list[Any] = []  # objects with usage_by_role(): the run's reward functions

    def totals(self) -> dict[str, Usage]:
        """Usage summed by role over every part."""
        parts = [self.previous, self.checks, *(s.usage_by_role() for s in self.sources if hasattr(s, "usage_by_role"))]
        total: dict[str, Usage] = {}
        for part in parts:
            for role, usage in part.items():
                total.setdefault(role, Usage()).add(usage)
        return total

    def spent(self) -> float | None:
        """USD spent so far, None when part of it went to a model without a price."""
        return known_cost(self.totals())

    def write(self, path: Path) -> None:
        """usage.json: by role, requests, tokens, cost (null when unknown), seconds."""
        path.write_text(json.dumps({role: usage_record(u) for role, u in self.totals().items()}, indent=2) + "\n")


class UsageWriter(TrainerCallback):
    """Writes the ledger to usage.json after every step (main process only)."""

    def __init__(self, ledger: UsageLedger, path: Path):
        self.ledger, self.path = ledger, path

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.ledger.write(self.path)


class SpendingLimit(TrainerCallback):
    """Stops the run, with a checkpoint, before a step whose calls could take the spend past `limit` USD.

    `step_cost` is one rollout batch's upper-bound cost (ropd.training.costs); steps that reuse a batch
    (training.updates_per_batch > 1) make no calls and are not checked. `message` says why it stopped.
    """

    def __init__(self, ledger: UsageLedger, limit: float, step_cost: float, updates_per_batch: int = 1):
        self.ledger, self.limit, self.step_cost, self.updates_per_batch = ledger, limit, step_cost, updates_per_batch
        self.message: str | None = None

    def check(self, step: int) -> str | None:
        """Why the step after `step` may not start (None: it may)."""
        spent = self.ledger.spent() or 0.0
        if spent + self.step_cost <= self.limit:
            return None
        return (
            f"spending limit reached: spent {format_usd(spent)} of output.max_cost_usd {format_usd(self.limit)}, and the next step "
            f"may cost up to {format_usd(self.step_cost)}; stopped before step {step + 1}"
        )

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step >= state.max_steps or step % self.updates_per_batch:
            return
        self.message = self.check(step)
        if self.message is not None:
            control.should_save = True
            control.should_training_stop = True
