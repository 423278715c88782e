"""What `ropd inspect` reads from a run folder: metrics.jsonl and groups.jsonl, the saved config, the cache, and the
rows of the group list (a group's summary, its advantages, whether its rewards disagreed with correctness).
"""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ropd.endpoints.cache import usage_rows

QUESTION_SNIPPET = 240  # characters of the question kept in the group list (search and display)


ZERO_SPREAD = 1e-6  # as ropd.training.trainers.ZERO_SPREAD_TOLERANCE, without importing torch


CONFIG_SECTIONS = ("method", "teacher", "student", "judge", "data", "training", "output")


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSONL file and the number of lines that were not one (a run killed mid-write)."""
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    with path.open(encoding="utf-8") as source:
        for line in source:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(value, dict):
                records.append(value)
            else:
                bad += 1
    return records, bad


def step_records(metrics: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """metrics.jsonl merged into one record per step (a step may log several lines), in step order."""
    by_step: dict[int, dict[str, Any]] = {}
    for record in metrics:
        step = record.get("step")
        if isinstance(step, int):
            by_step.setdefault(step, {}).update(record)
    return [by_step[s] for s in sorted(by_step)]


def latest_groups(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """groups.jsonl with one record per (step, prompt): a resumed run may have scored a step twice; the last counts."""
    kept: dict[tuple[Any, Any], dict[str, Any]] = {}
    for record in records:
        kept[(record.get("step"), record.get("prompt_id"))] = record
    return sorted(kept.values(), key=lambda r: (r.get("step") or 0, str(r.get("prompt_id"))))


_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s@]+@")


def _display(value: Any) -> str:
    """A config value as text, URL credentials masked."""
    if isinstance(value, (list, tuple)):
        text = ", ".join(_display(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, default=str)
    elif value is None:
        text = "–"
    else:
        text = str(value)
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def config_summary(config: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(field, value)]) for the run config's sections; price and alias tables are left out."""
    sections = []
    for name in CONFIG_SECTIONS:
        values = config.get(name)
        if not isinstance(values, dict):
            continue
        rows: list[tuple[str, str]] = []
        for key, value in values.items():
            if isinstance(value, dict):
                rows.extend((f"{key}.{k}", _display(v)) for k, v in value.items())
            else:
                rows.append((key, _display(value)))
        sections.append((name, rows))
    return sections


def cache_summary(path: Path) -> dict[str, Any] | None:
    """Rows, tokens and cost per role of a result cache, opened read-only (never created or changed); None if absent."""
    if not path.is_file():
        return None
    try:
        rows = usage_rows(path)
    except sqlite3.DatabaseError as exc:
        return {"path": str(path), "error": f"unreadable ({exc})", "roles": {}}
    roles: dict[str, dict[str, float]] = {}
    for role, usage in rows:
        entry = roles.setdefault(role, {"rows": 0, "tokens": 0, "cost_usd": 0.0, "unpriced": 0.0})
        entry["rows"] += 1
        entry["tokens"] += (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        entry["cost_usd"] += usage.get("cost_usd") or 0.0
        entry["unpriced"] += usage.get("unpriced_requests") or 0.0
    for entry in roles.values():  # a result from a model without a price: the role's cost is unknown, not $0
        if entry.pop("unpriced"):
            entry["cost_usd"] = None
    return {"path": str(path), "error": None, "roles": roles}


def reward_disagrees(rewards: Sequence[float] | None, correct: Sequence[bool] | None) -> bool:
    """Whether a wrong rollout got a reward at least as high as a right one of the same group (a misranked or tied pair)."""
    if not rewards or not correct or len(rewards) != len(correct):
        return False
    right = [r for r, ok in zip(rewards, correct, strict=True) if ok]
    wrong = [r for r, ok in zip(rewards, correct, strict=True) if not ok]
    return bool(right and wrong) and max(wrong) >= min(right)


def group_row(record: dict[str, Any], key: int) -> dict[str, Any]:
    """The light summary of one group the page lists, filters and pages (full records load on demand)."""
    rewards = record.get("rewards")
    correct = record.get("correct")
    question = str(record.get("question") or "")
    row: dict[str, Any] = {
        "key": key,
        "step": record.get("step"),
        "pid": str(record.get("prompt_id") or ""),
        "q": question[:QUESTION_SNIPPET] + ("…" if len(question) > QUESTION_SNIPPET else ""),
        "n": len(record.get("rollouts") or []),
        "failed": rewards is None,
        "error": str(record.get("error") or "")[:200],
    }
    if rewards:
        row.update(mean=statistics.fmean(rewards), lo=min(rewards), hi=max(rewards), spread=max(rewards) - min(rewards) > ZERO_SPREAD)
    if correct is not None:
        row.update(right=sum(bool(c) for c in correct), disagree=reward_disagrees(rewards, correct))
    return row


def with_advantages(record: dict[str, Any]) -> dict[str, Any]:
    """The record, with advantages computed (reward - group mean; 0 without spread) when it was written without them."""
    rewards = record.get("rewards")
    if record.get("advantages") is None and rewards:
        mean = statistics.fmean(rewards)
        flat = max(rewards) - min(rewards) <= ZERO_SPREAD
        record = {**record, "advantages": [0.0 if flat else r - mean for r in rewards]}
    return record
