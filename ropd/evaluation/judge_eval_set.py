"""The labelled set `ropd judge-eval` measures judges on: right and wrong answers to each prompt, sampled once.

Per prompt, answers are sampled once from real models (local ones served by ropd on loopback; every
sample stored in a ResultCache the moment it arrives) and labelled by `ropd.reward.answers.is_correct` against
the prompt's reference answer. Prompts without at least one correct and one incorrect answer are dropped
and counted. The teacher answers the rubricator contrasts them with come from a model, or from the
dataset's worked solutions ("reference"). Judging the set is `ropd.evaluation.judge_eval`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, ValidationError

from ropd.config import EndpointConfig, ModelAlias
from ropd.data import REASONING_GYM, DataError
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.llm import LLMClient
from ropd.endpoints.models import is_local
from ropd.endpoints.serve import local_identity
from ropd.reward.answers import is_correct
from ropd.types import PromptRow

REFERENCE_TEACHER = "reference"
TEACHER_SEED_OFFSET = 10_000  # teacher samples of a model that also generates answers must differ from its answers
UNSERVED = "http://127.0.0.1:9/v1"  # stands in for a local model's server while only the cache is read


class JudgeEvalError(RuntimeError):
    """A model server that could not be started for sampling or judging; the message carries its log tail."""


class Candidate(BaseModel):
    """One answer to judge: which model sample it is, its text, and whether its final answer is right."""

    source: str
    text: str
    correct: bool


class LabelledItem(BaseModel):
    """A question with its reference answer, the teacher answers for the rubricator, and labelled answers to judge."""

    id: str
    question: str
    answer: str
    task: str | None = None
    teacher_answers: list[str] = Field(min_length=1)
    candidates: list[Candidate] = Field(min_length=2)


class LabelledSet(BaseModel):
    """Items with at least one correct and one incorrect answer each, and how many prompts were dropped and why."""

    dataset: str
    teacher: str
    generators: list[str]
    examined: int
    dropped_no_correct: int
    dropped_no_incorrect: int
    items: list[LabelledItem]


class Sampling(BaseModel):
    """How answers are sampled from the generator and teacher models."""

    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int = 0
    timeout: float = Field(default=7200.0, gt=0)


def parse_model_counts(text: str, default_k: int) -> list[tuple[str, int]]:
    """'modelA:4,modelB' -> [('modelA', 4), ('modelB', default_k)]; a model name may itself contain ':'."""
    specs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, count = part.rpartition(":")
        if name and count.isdigit() and int(count) >= 1:
            specs.append((name, int(count)))
        else:
            specs.append((part, default_k))
    if not specs:
        raise ValueError(f"no model named in {text!r}")
    return specs


def worked_solutions(spec: str, rows: list[PromptRow]) -> dict[str, str]:
    """The dataset's worked solution per row id: a row's `solution` field, or a reasoning-gym entry's chain of thought."""
    found = {r.id: str(r.model_extra["solution"]) for r in rows if (r.model_extra or {}).get("solution")}
    if spec.startswith(REASONING_GYM):
        import reasoning_gym

        task, _, query = spec.removeprefix(REASONING_GYM).partition("?")
        params = {k: int(v[-1]) if v[-1].lstrip("-").isdigit() else v[-1] for k, v in parse_qs(query).items()}
        params.setdefault("size", 500)
        params.setdefault("seed", 0)
        for index, entry in enumerate(reasoning_gym.create_dataset(task, **params)):
            cot = (entry.get("metadata") or {}).get("answer_cot")
            if cot:
                found.setdefault(f"{task}-s{params['seed']}-{index}", str(cot))
    return found


@contextmanager
def serving(
    model: str,
    base_url: str | None,
    aliases: dict[str, ModelAlias] | None,
    needed: bool = True,
    threads: int | None = None,
    dtype: str = "auto",
) -> Iterator[tuple[str | None, str | None]]:
    """(base URL, cache identity) for calling `model`: the given URL, a loopback server for a local model, or its API.

    A local model gets a server only when `needed`; otherwise calls fail fast (the cache is expected to answer).
    """
    if base_url or not is_local(model, aliases):
        yield base_url, None
        return
    identity = local_identity(model, aliases, dtype)
    if not needed:
        yield UNSERVED, identity
        return
    from ropd.endpoints.serve import ServeError, local_server

    try:
        with local_server(model, models=aliases, threads=threads, dtype=dtype) as url:
            yield url, identity
    except ServeError as exc:
        raise JudgeEvalError(f"cannot serve {model}: {exc}") from None


def _sampler(
    model: str, base_url: str | None, identity: str | None, sampling: Sampling, role: str, seed: int, cache: ResultCache
) -> LLMClient:
    endpoint = EndpointConfig(
        model=model,
        base_url=base_url,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        seed=seed,
        timeout=sampling.timeout,
        max_concurrency=8,
    )
    return LLMClient(endpoint, role=role, cache=cache, identity=identity)


def _sample_key(row: PromptRow, purpose: str) -> tuple[list[dict], dict]:
    return [m.model_dump() for m in row.prompt], {"prompt_id": row.id, "purpose": purpose}


async def _sample_all(client: LLMClient, rows: list[PromptRow], k: int, purpose: str, drop_truncated: bool = False) -> dict[str, list[str]]:
    """k samples per row (less those cut off at max_tokens when `drop_truncated`); every sample is cached as it arrives,
    and a failure is raised only after the rest finished."""

    async def one(row: PromptRow) -> list[str]:
        messages, key_extra = _sample_key(row, purpose)
        samples = await client.chat_samples(messages, n=k, key_extra=key_extra)
        return [s.text for s in samples if not (drop_truncated and s.truncated)]

    try:
        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
    finally:
        await client.aclose()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return {row.id: texts for row, texts in zip(rows, results, strict=True)}  # type: ignore[misc]


def sample_model(
    model: str,
    k: int,
    rows: list[PromptRow],
    cache: ResultCache,
    sampling: Sampling,
    *,
    purpose: str,
    role: str,
    seed: int,
    base_url: str | None = None,
    aliases: dict[str, ModelAlias] | None = None,
    threads: int | None = None,
    drop_truncated: bool = False,
) -> dict[str, list[str]]:
    """k answers per row from `model`, from the cache when there; a local model is served only when some are missing.
    With `drop_truncated`, answers cut off at max_tokens are left out (teacher answers: they are references)."""
    with serving(model, base_url, aliases, needed=False) as (url, identity):
        missing = _count_missing(_sampler(model, url, identity, sampling, role, seed, cache), rows, k, purpose)
    with serving(model, base_url, aliases, needed=missing > 0, threads=threads) as (url, identity):
        return asyncio.run(_sample_all(_sampler(model, url, identity, sampling, role, seed, cache), rows, k, purpose, drop_truncated))


def _count_missing(client: LLMClient, rows: list[PromptRow], k: int, purpose: str) -> int:
    missing = 0
    for row in rows:
        messages, key_extra = _sample_key(row, purpose)
        missing += sum(t is None for t in client.lookup_chat(messages, n=k, key_extra=key_extra))
    return missing


def choose_candidates(row_id: str, labelled: list[Candidate], max_answers: int) -> list[Candidate]:
    """Up to `max_answers` distinct answers, about half correct, spread over the generators, in a fixed shuffled order."""
    unique: dict[str, Candidate] = {}
    for candidate in labelled:
        unique.setdefault(candidate.text.strip(), candidate)
    right = _spread([c for c in unique.values() if c.correct])
    wrong = _spread([c for c in unique.values() if not c.correct])
    n_right = min(len(right), max(1, max_answers // 2))
    n_wrong = min(len(wrong), max_answers - n_right)
    n_right = min(len(right), max_answers - n_wrong)
    chosen = right[:n_right] + wrong[:n_wrong]
    random.Random(f"judge-eval:{row_id}").shuffle(chosen)
    return chosen


def _spread(candidates: list[Candidate]) -> list[Candidate]:
    """Round-robin over sources (models), so the first few come from different generators."""
    by_model: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_model.setdefault(c.source.rsplit("#", 1)[0], []).append(c)
    queues = list(by_model.values())
    out = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def build_labelled_set(
    dataset: str,
    rows: list[PromptRow],
    generators: list[tuple[str, int]],
    teacher: tuple[str, int],
    cache: ResultCache,
    *,
    sampling: Sampling | None = None,
    max_answers: int = 3,
    max_items: int | None = None,
    base_urls: dict[str, str] | None = None,
    aliases: dict[str, ModelAlias] | None = None,
    threads: int | None = None,
) -> LabelledSet:
    """Sample, label and select answers for every row with a reference answer (see the module docstring)."""
    sampling = sampling or Sampling()
    base_urls = base_urls or {}
    rows = [r for r in rows if r.answer is not None and r.answer.strip()]
    if not rows:
        raise DataError(f"{dataset}: no row has a reference answer; judge-eval labels answers by checking them against it")
    teacher_model, teacher_k = teacher
    if teacher_model == REFERENCE_TEACHER:
        solutions = worked_solutions(dataset, rows)
        missing = [r.id for r in rows if r.id not in solutions]
        if missing:
            raise DataError(f"{dataset}: row id '{missing[0]}' has no worked solution ('solution' field) for --teacher reference")
        teacher_answers = {r.id: [solutions[r.id]] for r in rows}
    else:
        teacher_answers = sample_model(
            teacher_model,
            teacher_k,
            rows,
            cache,
            sampling,
            purpose="judge-eval-teacher",
            role="teacher",
            seed=sampling.seed + TEACHER_SEED_OFFSET,
            base_url=base_urls.get(teacher_model),
            aliases=aliases,
            threads=threads,
            drop_truncated=True,
        )
    samples: dict[str, list[Candidate]] = {r.id: [] for r in rows}
    for model, k in generators:
        texts = sample_model(
            model,
            k,
            rows,
            cache,
            sampling,
            purpose="judge-eval-answers",
            role="answers",
            seed=sampling.seed,
            base_url=base_urls.get(model),
            aliases=aliases,
            threads=threads,
        )
        for row in rows:
            task, metadata = (row.model_extra or {}).get("task"), (row.model_extra or {}).get("metadata")
            samples[row.id] += [
                Candidate(source=f"{model}#{i}", text=t, correct=is_correct(t, row.answer, task, metadata))
                for i, t in enumerate(texts[row.id])
            ]
    items, no_right, no_wrong = [], 0, 0
    for row in rows:
        labelled = [c for c in samples[row.id] if c.text.strip()]
        usable_teacher = [t for t in teacher_answers[row.id] if t.strip()]
        if not any(c.correct for c in labelled):
            no_right += 1
        elif all(c.correct for c in labelled):
            no_wrong += 1
        elif usable_teacher:
            item = LabelledItem(
                id=row.id,
                question=row.question,
                answer=str(row.answer),
                task=(row.model_extra or {}).get("task"),
                teacher_answers=usable_teacher,
                candidates=choose_candidates(row.id, labelled, max_answers),
            )
            items.append(item)
    return LabelledSet(
        dataset=dataset,
        teacher=f"{teacher_model}:{teacher_k}" if teacher_model != REFERENCE_TEACHER else REFERENCE_TEACHER,
        generators=[f"{m}:{k}" for m, k in generators],
        examined=len(rows),
        dropped_no_correct=no_right,
        dropped_no_incorrect=no_wrong,
        items=items[:max_items] if max_items else items,
    )


def load_labelled_set(path: str | Path) -> LabelledSet:
    """A labelled set saved as JSON (`save_labelled_set`); DataError names the file and the field."""
    path = Path(path)
    try:
        return LabelledSet.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: labelled set not found") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"{path}: field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}") from None


def save_labelled_set(labelled: LabelledSet, path: str | Path) -> None:
    """Write a labelled set as JSON (what `load_labelled_set` and `--labelled` read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(labelled.model_dump_json(indent=1) + "\n")
