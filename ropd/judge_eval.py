"""`ropd judge-eval`: how well a rubricator + judge setup ranks right answers above wrong ones, offline.

1. A labelled set. Per prompt, answers are sampled once from real models (local ones served by ropd
   on loopback; every sample stored in a ResultCache the moment it arrives) and labelled by
   `ropd.answers.is_correct` against the prompt's reference answer. Prompts without at least one
   correct and one incorrect answer are dropped and counted. The teacher answers the rubricator
   contrasts them with come from a model, or from the dataset's worked solutions ("reference").
2. Per judging mode, as training does it (ropd.scoring.score_group, the path training uses): the
   rubricator writes a rubric per item (cached, so every mode sees the same rubric), the judge checks
   every answer, and ropd.scoring.score_verdicts computes the rewards. One row per combination of the code checks the config
   allows, from the same verdicts, so the extra rows cost no judge call: the judge's booleans alone,
   + verifiable targets (when `verifiable_criteria` is on), + evidence check (when `evidence_check`
   is on), each with and without the consensus criterion. `as_configured` marks the row training computes.
3. Reward quality (ropd.quality): AUC and within-item pairwise accuracy, plus the judge's schema
   validity, calls, tokens and seconds per call. Each item's outcome is cached too: a rerun is free.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ropd.answers import is_correct
from ropd.cache import ResultCache
from ropd.config import EndpointConfig, JudgeConfig, ModelAlias, redact_url
from ropd.data import REASONING_GYM, DataError
from ropd.judge import JudgeTally, judge_endpoint
from ropd.llm import LLMClient
from ropd.models import is_local, local_identity
from ropd.prompts import RUBRIC_VARIABLES, VERIFIER_VARIABLES, load_template
from ropd.quality import pair_counts, roc_auc
from ropd.rubrics import consensus_answer
from ropd.scoring import ScoredGroup, score_group, score_verdicts
from ropd.types import PromptRow, Rubric, Verdict

MODES = ("group", "single", "consistency")
REFERENCE_TEACHER = "reference"
TEACHER_SEED_OFFSET = 10_000  # teacher samples of a model that also generates answers must differ from its answers
ITEM_RECORD_VERSION = 2  # 2: whole verdicts (evidence copies included) instead of their booleans
# JudgeConfig fields that only change how verdicts become rewards: no part of an item's cache key.
SCORING_ONLY = frozenset({"consensus_criterion", "consensus_points", "evidence_check", "score_teacher_answers", "rubric_refresh"})
UNSERVED = "http://127.0.0.1:9/v1"  # stands in for a local model's server while only the cache is read


# --- the labelled set -------------------------------------------------------------------------------


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
    from ropd.serve import ServeError, local_server

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(labelled.model_dump_json(indent=1) + "\n")


# --- judging the set ----------------------------------------------------------------------------------


class ItemResult(BaseModel):
    """One item judged in one mode: the rubric, the verdict per answer (input order), and what the judge cost."""

    id: str
    rubric: Rubric | None = None
    verdicts: list[Verdict] | None = None
    error: str | None = None
    judge_calls: int = 0
    judge_replies: int = 0
    judge_valid: int = 0
    judge_requests: int = 0
    judge_tokens: int = 0
    judge_seconds: float = 0.0
    seconds: float = 0.0


def _item_key(item: LabelledItem, cfg: JudgeConfig, identity: str) -> str:
    """Everything that decides an item's outcome: the item, the judge's identity and settings, and the template texts."""
    settings = cfg.model_dump(
        exclude={"base_url", "api_key_env", "timeout", "max_retries", "max_concurrency", "requests_per_minute", "tokens_per_minute"}
        | SCORING_ONLY
    )
    templates = {
        "rubric": load_template(cfg.rubric_template, RUBRIC_VARIABLES).hash,
        "verifier": load_template(cfg.verifier_template, VERIFIER_VARIABLES).hash,
    }
    return ResultCache.make_key(
        kind="judge-eval-item", version=ITEM_RECORD_VERSION, item=item.model_dump(), judge=identity, settings=settings, templates=templates
    )


def _judge_calls(cfg: JudgeConfig, num_answers: int) -> int:
    if cfg.mode == "single":
        return num_answers
    size = cfg.chunk_size or num_answers
    return -(-num_answers // size)


async def measure_item(
    item: LabelledItem, cfg: JudgeConfig, endpoint: EndpointConfig, identity: str | None, cache: ResultCache
) -> ItemResult:
    """Rubric, then verdicts, for one item; usage from clients of its own, so the figures are this item's alone."""
    started = time.monotonic()
    common: dict[str, Any] = {"cache": cache, "max_reasks": cfg.max_reasks, "identity": identity}
    rubricator = LLMClient(endpoint, role="rubricator", **common)
    judge = LLMClient(judge_endpoint(endpoint, cfg), role="judge", **common)
    texts = [c.text for c in item.candidates]
    tally = JudgeTally()
    measured = cfg.model_copy(update={"score_teacher_answers": False})  # the candidates' rewards only
    try:
        outcome = await score_group(item.question, item.teacher_answers, texts, measured, rubricator, judge, seed=item.id, tally=tally)
    finally:
        await rubricator.aclose()
        await judge.aclose()
    result = ItemResult(id=item.id, rubric=outcome.rubric, verdicts=outcome.verdicts or None, error=outcome.error)
    usage = judge.usage
    result.judge_calls = _judge_calls(cfg, len(texts)) + tally.fallbacks
    if cfg.mode == "consistency":  # validity of the sampled verdicts (a fallback call's re-asks are not counted)
        result.judge_replies, result.judge_valid = tally.samples, tally.valid_samples
    else:  # every reply but the last of a call was re-asked; a failed call's replies were all invalid
        result.judge_replies = usage.requests - usage.retries
        result.judge_valid = max(0, result.judge_calls - usage.failures) if result.judge_replies else 0
    result.judge_requests = usage.requests
    result.judge_tokens = usage.prompt_tokens + usage.completion_tokens
    result.judge_seconds = usage.seconds
    result.seconds = time.monotonic() - started
    return result


async def measure_items(
    items: list[LabelledItem],
    cfg: JudgeConfig,
    endpoint: EndpointConfig,
    identity: str | None,
    cache: ResultCache,
    concurrency: int,
    progress: bool = False,
) -> list[ItemResult]:
    """Every item in one mode, `concurrency` at a time; an item's outcome is stored once it succeeded and read back on reruns."""
    who = identity or f"{endpoint.model}@{redact_url(endpoint.base_url)}"
    slots = asyncio.Semaphore(concurrency)
    columns = (TextColumn(f"judging ({cfg.mode})"), BarColumn(), MofNCompleteColumn(), TextColumn("items"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("judge", total=len(items))

        async def one(item: LabelledItem) -> ItemResult:
            key = _item_key(item, cfg, who)
            stored = cache.get(key)
            if stored is not None:
                bar.advance(task)
                return ItemResult.model_validate(stored)
            async with slots:
                result = await measure_item(item, cfg, endpoint, identity, cache)
            if result.error is None:
                cache.put(key, "judge-eval", result.model_dump(mode="json"), {"seconds": result.seconds}, {"judge": who, "mode": cfg.mode})
            bar.advance(task)
            return result

        return list(await asyncio.gather(*(one(item) for item in items)))


def all_stored(items: list[LabelledItem], cfgs: list[JudgeConfig], identity: str, cache: ResultCache) -> bool:
    """True when every item's outcome in every mode is already in the cache (no judge server needed)."""
    keys = [_item_key(item, cfg, identity) for cfg in cfgs for item in items]
    return len(cache.get_many(keys)) == len(set(keys))


# --- summaries -----------------------------------------------------------------------------------------


class SetupResult(BaseModel):
    """Reward quality of one judge setup and one combination of code checks over the labelled set."""

    judge: str
    mode: str
    expected_evidence: bool
    targets: bool = Field(default=False, description="Verifiable targets decided their criteria (verifiable_criteria).")
    evidence_check: bool = Field(default=False, description="The judge's copied results decided the final-result criteria.")
    consensus: bool
    as_configured: bool = Field(default=False, description="These are the checks the config turns on: what training computes.")
    items: int = Field(description="Items judged successfully (the figures below are over these).")
    failed_items: int
    answers: int
    auc: float | None
    pairwise_acc: float | None = Field(description="Within-item (correct, incorrect) pairs where the correct answer scores higher.")
    pairwise_ties: float | None = Field(description="Share of those pairs with equal scores (counted as misses above).")
    pairs: int
    consensus_items: int = Field(description="Items whose teacher answers had a majority final answer (the criterion was added).")
    target_criteria: float | None = Field(default=None, description="Mean criteria per item decided by a grounded target.")
    evidence_criteria: float | None = Field(default=None, description="Mean criteria per item decided by the evidence check.")
    dropped_targets: float | None = Field(default=None, description="Mean targets per item dropped back to the judge.")
    validity: float | None = Field(description="Share of judge replies that held complete verdicts (first try or not).")
    calls: int
    replies: int
    tokens_per_call: float | None
    seconds_per_call: float | None = Field(description="Mean seconds per judge request, queueing at the server included.")
    seconds_per_item: float | None = Field(description="Mean wall seconds per item: rubric plus verdicts.")


def scoring_rows(cfg: JudgeConfig) -> list[dict[str, bool]]:
    """The combinations of code checks reported for a config: each check it turns on, off and on; consensus off and on."""
    targets = [False, True] if cfg.verifiable_criteria else [False]
    evidence = [False, True] if cfg.evidence_check and cfg.expected_evidence else [False]
    return [
        {"verifiable_criteria": t, "evidence_check": e, "consensus_criterion": c} for t in targets for e in evidence for c in (False, True)
    ]


def score_item(item: LabelledItem, result: ItemResult, cfg: JudgeConfig) -> ScoredGroup | None:
    """An item's rewards exactly as training computes them under `cfg` (ropd.scoring), or None when it was not judged."""
    if result.verdicts is None or result.rubric is None:
        return None
    texts = [c.text for c in item.candidates]
    return score_verdicts(result.rubric, result.verdicts, texts, item.teacher_answers, cfg, item.question)


def summarize(
    judge: str,
    cfg: JudgeConfig,
    items: list[LabelledItem],
    results: list[ItemResult],
    consensus: bool | None = None,
    *,
    targets: bool = False,
    evidence: bool = False,
) -> SetupResult:
    """Rewards recomputed from the stored verdicts with the given code checks (ropd.scoring), then the quality figures.

    `consensus` None keeps the config's setting; targets and evidence apply only where the config allows them.
    """
    consensus = cfg.consensus_criterion if consensus is None else consensus
    checks = {"verifiable_criteria": targets and cfg.verifiable_criteria, "consensus_criterion": consensus}
    checks["evidence_check"] = evidence and cfg.evidence_check and cfg.expected_evidence
    scoring = cfg.model_copy(update=checks)
    groups: list[tuple[list[float], list[bool]]] = []
    scored_items: list[ScoredGroup] = []
    for item, result in zip(items, results, strict=True):
        scored = score_item(item, result, scoring)
        if scored is None:
            continue
        scored_items.append(scored)
        groups.append((scored.rewards, [c.correct for c in item.candidates]))
    with_consensus_items = sum(s.consensus is not None for s in scored_items)
    counts = pair_counts(groups)
    ok = [r for r in results if r.verdicts is not None]
    n = len(scored_items)
    calls = sum(r.judge_calls for r in results)
    replies = sum(r.judge_replies for r in results)
    requests = sum(r.judge_requests for r in results)
    return SetupResult(
        judge=judge,
        mode=cfg.mode,
        expected_evidence=cfg.expected_evidence,
        targets=checks["verifiable_criteria"],
        evidence_check=checks["evidence_check"],
        consensus=consensus,
        as_configured=all(getattr(cfg, name) == value for name, value in checks.items()),
        items=len(groups),
        failed_items=len(results) - len(ok),
        answers=sum(len(labels) for _, labels in groups),
        auc=roc_auc([s for scores, _ in groups for s in scores], [y for _, labels in groups for y in labels]),
        pairwise_acc=counts.wins / counts.pairs if counts.pairs else None,
        pairwise_ties=counts.ties / counts.pairs if counts.pairs else None,
        pairs=counts.pairs,
        consensus_items=with_consensus_items,
        target_criteria=sum(s.count("target") for s in scored_items) / n if n else None,
        evidence_criteria=sum(s.count("evidence") for s in scored_items) / n if n else None,
        dropped_targets=sum(len(s.dropped_targets) for s in scored_items) / n if n else None,
        validity=sum(r.judge_valid for r in results) / replies if replies else None,
        calls=calls,
        replies=replies,
        tokens_per_call=sum(r.judge_tokens for r in results) / requests if requests else None,
        seconds_per_call=sum(r.judge_seconds for r in results) / requests if requests else None,
        seconds_per_item=sum(r.seconds for r in results) / len(results) if results else None,
    )


def evaluate_judge(
    labelled: LabelledSet,
    cfg: JudgeConfig,
    modes: list[str],
    cache: ResultCache,
    *,
    aliases: dict[str, ModelAlias] | None = None,
    concurrency: int = 4,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Judge the labelled set in each mode (the judge served once, and only when some outcome is not cached); the full report."""
    if not cfg.model:
        raise ValueError("judge-eval needs a judge model")
    cfgs = [cfg.model_copy(update={"mode": mode}) for mode in modes]
    local = not cfg.base_url and is_local(cfg.model, aliases)
    identity = local_identity(cfg.model, aliases, cfg.serve_dtype) if local else f"{cfg.model}@{redact_url(cfg.base_url)}"
    needed = not all_stored(labelled.items, cfgs, identity, cache)
    setups: list[SetupResult] = []
    per_item = {item.id: _item_summary(item) for item in labelled.items}
    with serving(cfg.model, cfg.base_url, aliases, needed=needed, threads=threads, dtype=cfg.serve_dtype) as (url, served_identity):
        endpoint = EndpointConfig(**{k: v for k, v in cfg.model_dump().items() if k in EndpointConfig.model_fields})
        endpoint = endpoint.model_copy(update={"base_url": url})
        for mode_cfg in cfgs:
            results = asyncio.run(measure_items(labelled.items, mode_cfg, endpoint, served_identity, cache, concurrency, progress))
            for row in scoring_rows(mode_cfg):
                setups.append(
                    summarize(
                        cfg.model,
                        mode_cfg,
                        labelled.items,
                        results,
                        row["consensus_criterion"],
                        targets=row["verifiable_criteria"],
                        evidence=row["evidence_check"],
                    )
                )
            for item, result in zip(labelled.items, results, strict=True):
                scored = score_item(item, result, mode_cfg)
                per_item[item.id]["rewards"][mode_cfg.mode] = scored.rewards if scored is not None else result.error
    answers = [c for item in labelled.items for c in item.candidates]
    return {
        "dataset": labelled.dataset,
        "judge": cfg.model,
        "teacher": labelled.teacher,
        "generators": labelled.generators,
        "labelled": {
            "items": len(labelled.items),
            "examined": labelled.examined,
            "dropped_no_correct": labelled.dropped_no_correct,
            "dropped_no_incorrect": labelled.dropped_no_incorrect,
            "answers": len(answers),
            "correct_answers": sum(c.correct for c in answers),
        },
        "results": [s.model_dump() for s in setups],
        "items": list(per_item.values()),
    }


def _item_summary(item: LabelledItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "answer": item.answer,
        "consensus": consensus_answer(item.teacher_answers),
        "sources": [c.source for c in item.candidates],
        "correct": [c.correct for c in item.candidates],
        "rewards": {},
    }


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False)
