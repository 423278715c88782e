"""Prompt loading: local files, Hub datasets and reasoning-gym generators, into validated PromptRows.

Spec forms:
  path/to/file.jsonl | .json | .parquet | .csv   rows with `prompt` (chat messages or a string),
                                                 optional `answer` (or verl's reward_model.ground_truth) and `id`
  reasoning-gym:TASK?size=N&seed=S               a seeded reasoning-gym generator
  owner/name[:config]                            a Hub dataset (online only); split from config
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from ropd.types import PromptRow

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
REASONING_GYM = "reasoning-gym:"


class DataError(ValueError):
    """A dataset that cannot be used; names the source, row and field."""


def load_prompts(spec: str, split: str = "train", max_prompts: int | None = None, system_prompt: str | None = None) -> list[PromptRow]:
    """Load and validate prompt rows from any supported spec."""
    if spec.startswith(REASONING_GYM):
        rows = _reasoning_gym_rows(spec)
    elif Path(spec).suffix.lower() in FILE_FORMATS or Path(spec).exists():
        rows = _file_rows(Path(spec))
    else:
        rows = _hub_rows(spec, split)
    prompts = [_to_prompt_row(raw, spec, index) for index, raw in enumerate(rows)]
    _check_unique_ids(prompts, spec)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    if system_prompt:
        prompts = [_with_system(p, system_prompt) for p in prompts]
    return prompts


def read_rows(spec: str, split: str = "train", config: str | None = None) -> list[dict[str, Any]]:
    """The raw rows of a local file or a Hub dataset (with its `config`), as stored: for readers of other layouts."""
    if Path(spec).suffix.lower() in FILE_FORMATS or Path(spec).exists():
        return _file_rows(Path(spec))
    return _hub_rows(f"{spec}:{config}" if config else spec, split)


def to_dataset(prompts: list[PromptRow]):
    """A `datasets.Dataset` in TRL's conversational prompt format (columns: id, prompt, answer, task, metadata).

    `task` and `metadata` (JSON text; "" when a row has none) reach the reward functions with the answer, so the
    outcome reward checks a reasoning-gym row with the task's own scorer rather than a generic comparison.
    """
    from datasets import Dataset

    return Dataset.from_list([_dataset_row(p) for p in prompts])


def _dataset_row(row: PromptRow) -> dict[str, Any]:
    extra = row.model_extra or {}
    task, metadata = extra.get("task"), extra.get("metadata")
    return {
        "id": row.id,
        "prompt": [m.model_dump() for m in row.prompt],
        "answer": row.answer or "",
        "task": str(task) if task else "",
        "metadata": metadata if isinstance(metadata, str) else json.dumps(metadata) if metadata else "",
    }


def prompt_token_counts(prompts: list[PromptRow], tokenizer) -> list[int]:
    """Tokens of each prompt as the student sees it: its chat template with the generation prompt."""
    counts = []
    for p in prompts:
        encoded = tokenizer.apply_chat_template([m.model_dump() for m in p.prompt], add_generation_prompt=True, return_dict=True)
        counts.append(len(encoded["input_ids"]))
    return counts


def check_prompt_lengths(prompts: list[PromptRow], tokenizer, max_tokens: int, source: str) -> None:
    """Refuse prompts longer than `max_tokens` (DataError naming each row id and its length); nothing is cut or dropped."""
    too_long = [(p.id, n) for p, n in zip(prompts, prompt_token_counts(prompts, tokenizer), strict=True) if n > max_tokens]
    if not too_long:
        return
    shown = ", ".join(f"id '{pid}' ({n} tokens)" for pid, n in too_long[:5])
    shown += f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
    raise DataError(
        f"{source}: {len(too_long)} prompt(s) are longer than the {max_tokens}-token limit (data.max_prompt_tokens): {shown}. "
        f"Shorten or remove those rows, or raise --data-max-prompt-tokens (prompt plus completion must fit the student's context)"
    )


def prompt_id(messages: list[dict[str, Any]]) -> str:
    """A stable id for a prompt without one: a hash of its chat messages."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _to_prompt_row(raw: dict[str, Any], source: str, index: int) -> PromptRow:
    where = f"{source}, row {index + 1}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a row must be an object, got {type(raw).__name__}")
    if "prompt" not in raw or raw["prompt"] is None:
        raise DataError(f"{where}: field 'prompt' is missing")
    messages = raw["prompt"]
    if isinstance(messages, str):
        text = messages.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                messages = json.loads(text)
            except json.JSONDecodeError:
                messages = [{"role": "user", "content": messages}]
        else:
            messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        raise DataError(f"{where}: field 'prompt' must be a string or a list of chat messages, got {type(messages).__name__}")
    answer = raw.get("answer")
    if answer is None and isinstance(raw.get("reward_model"), dict):  # verl's row format (DAPO-Math-17k and others)
        answer = raw["reward_model"].get("ground_truth")
    row = {**raw, "prompt": messages, "answer": None if answer is None else str(answer)}
    row["id"] = str(raw["id"]) if raw.get("id") not in (None, "") else prompt_id(messages)
    try:
        return PromptRow.model_validate(row)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "row"
        raise DataError(f"{where}: field '{field}': {err['msg']}") from None


def _check_unique_ids(prompts: list[PromptRow], source: str) -> None:
    seen: dict[str, int] = {}
    for index, p in enumerate(prompts):
        if p.id in seen:
            raise DataError(f"{source}, row {index + 1}: field 'id': '{p.id}' repeats row {seen[p.id] + 1}")
        seen[p.id] = index


def _with_system(p: PromptRow, system_prompt: str) -> PromptRow:
    if p.prompt[0].role == "system":
        return p
    messages = [{"role": "system", "content": system_prompt}, *[m.model_dump() for m in p.prompt]]
    return p.model_copy(update={"prompt": PromptRow.model_validate({"id": p.id, "prompt": messages}).prompt})


def _file_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type '{path.suffix}'; use one of {', '.join(FILE_FORMATS)}")
    if fmt == "json":
        return _json_rows(path)
    from datasets import load_dataset

    try:
        return list(load_dataset(fmt, data_files=str(path), split="train"))
    except Exception as exc:
        raise DataError(f"{path}: cannot read as {fmt}: {exc}") from exc


def _json_rows(path: Path) -> list[dict[str, Any]]:
    """JSON lines or a JSON array, parsed here so a bad line is named by its number."""
    text = path.read_text()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
        return data
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, row {len(rows) + 1} (line {number}): not valid JSON: {exc.msg}") from None
    return rows


def _reasoning_gym_rows(spec: str) -> list[dict[str, Any]]:
    import reasoning_gym

    task, _, query = spec.removeprefix(REASONING_GYM).partition("?")
    params: dict[str, Any] = {}
    for key, values in parse_qs(query, strict_parsing=bool(query)).items():
        value = values[-1]
        params[key] = int(value) if value.lstrip("-").isdigit() else value
    params.setdefault("size", 500)
    params.setdefault("seed", 0)
    try:
        generator = reasoning_gym.create_dataset(task, **params)
    except Exception as exc:
        raise DataError(f"{spec}: cannot create reasoning-gym dataset '{task}': {exc}") from exc
    return [
        {
            "id": f"{task}-s{params['seed']}-{index}",
            "prompt": [{"role": "user", "content": entry["question"]}],
            "answer": entry["answer"],
            "task": task,
            "metadata": json.loads(json.dumps(entry.get("metadata") or {}, default=str)),  # the task's scorer and the oracle read it
        }
        for index, entry in enumerate(generator)
    ]


def _hub_rows(spec: str, split: str) -> list[dict[str, Any]]:
    from datasets import load_dataset

    name, _, config = spec.partition(":")
    try:
        return list(load_dataset(name, config or None, split=split))
    except Exception as exc:
        raise DataError(
            f"cannot load dataset '{spec}' (split '{split}'): {exc}. Offline, pass a local file or a reasoning-gym spec instead."
        ) from exc
