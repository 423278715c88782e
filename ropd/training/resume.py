"""Resuming a run safely: the saved config.yaml is the run's contract.

`--resume` compares the config it is given with the one the run was started with and refuses (ConfigError,
exit 2) when a field outside RESUMABLE changed: a different teacher, judge, data, method or optimizer setting
would silently continue an incompatible run. `--resume` without `--config` continues the saved config itself
(`saved_config`), with the flags given applied on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ropd.config import ConfigError, RunConfig, dump_config, load_config

CONFIG_FILE = "config.yaml"

# Fields a resumed run may change: how long it runs, how it logs and saves, what it may spend, where and how it
# reaches the endpoints (URL, key variable, limits, retries; not which model is asked or what).
RESUMABLE = frozenset(
    {
        "training.max_steps",
        "training.logging_steps",
        "training.save_steps",
        "training.save_total_limit",
        "training.report_to",
        "training.log_groups",
        "training.max_failed_group_rate",
        "training.max_failed_steps",
        "output.resume",
        "output.max_cost_usd",
        "data.eval_dataset",
        *(
            f"{role}.{name}"
            for role in ("teacher", "judge")
            for name in (
                "base_url",
                "api_key_env",
                "timeout",
                "max_retries",
                "max_concurrency",
                "requests_per_minute",
                "tokens_per_minute",
                "check",
            )
        ),
    }
)


def resumable(field: str) -> bool:
    """Whether a resumed run may change `field` (RESUMABLE, and prices: they change what a run is said to cost, not what it does)."""
    return field in RESUMABLE or field.startswith("prices.")


def flatten(tree: dict[str, Any], prefix: str = "", depth: int = 3) -> dict[str, Any]:
    """Dotted keys of a nested mapping, `depth` levels down (section.field, and prices.MODEL.input)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and depth > 1:
            flat.update(flatten(value, f"{prefix}{key}.", depth - 1))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_fields(saved: RunConfig, new: RunConfig) -> list[str]:
    """Dotted names of the fields whose values differ between two configs, as saved (URLs redacted)."""
    before = flatten(yaml.safe_load(dump_config(saved)))
    after = flatten(yaml.safe_load(dump_config(new)))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def check_resume(config: RunConfig, out: Path) -> None:
    """Refuse to resume the run in `out` with a config that differs from its config.yaml outside RESUMABLE."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    saved = load_config(path)
    changed = [f for f in changed_fields(saved, config) if not resumable(f)]
    if changed:
        raise ConfigError(
            f"--resume: the config differs from the one {out} was started with ({path}) in: {', '.join(changed)}. "
            f"Resume with that config (`ropd train --resume --output {out}` reads it), or start a new run in another "
            f"--output. A resumed run may change only prices and: {', '.join(sorted(RESUMABLE))}"
        )


def saved_config(out: Path) -> Path | None:
    """The config.yaml of the run in `out`, if it has one."""
    path = out / CONFIG_FILE
    return path if path.is_file() else None
