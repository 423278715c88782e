"""`ropd judge-eval`: how well a rubricator + judge setup ranks right answers above wrong ones, offline.

1. A labelled set of right and wrong answers per prompt (`ropd.evaluation.judge_eval_set`: sampling, labelling,
   selection, load and save; its names are re-exported here).
2. Per judging mode, as training does it (ropd.reward.scoring.score_group, the path training uses): the
   rubricator writes a rubric per item (cached, so every mode sees the same rubric), the judge checks
   every answer, and ropd.reward.scoring.score_verdicts computes the rewards. One row per combination of the code checks the config
   allows, from the same verdicts, so the extra rows cost no judge call: the judge's booleans alone,
   + verifiable targets (when `verifiable_criteria` is on), + evidence check (when `evidence_check`
   is on), each with and without the consensus criterion. `as_configured` marks the row training computes.
3. Reward quality (ropd.evaluation.quality): AUC and within-item pairwise accuracy, plus the judge's schema
   validity, calls, tokens and seconds per call. Each item's outcome is cached too: a rerun is free.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ropd.config import EndpointConfig, JudgeConfig, ModelAlias, redact_url
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.llm import LLMClient
from ropd.endpoints.models import is_local
from ropd.endpoints.serve import local_identity
from ropd.evaluation.judge_eval_set import (
    Candidate,
    JudgeEvalError,
    LabelledItem,
    LabelledSet,
    Sampling,
    build_labelled_set,
    choose_candidates,
    load_labelled_set,
    parse_model_counts,
    save_labelled_set,
    serving,
)
from ropd.evaluation.quality import pair_counts, roc_auc
from ropd.reward.judge import JudgeTally, judge_endpoint
from ropd.reward.prompts import RUBRIC_VARIABLES, VERIFIER_VARIABLES, load_template
from ropd.reward.rubrics import consensus_answer
from ropd.reward.scoring import ScoredGroup, score_group, score_verdicts
from ropd.types import Rubric, Verdict

__all__ = [
    "MODES",
    "Candidate",
    "JudgeEvalError",
    "LabelledItem",
    "LabelledSet",
    "Sampling",
    "SetupResult",
    "build_labelled_set",
    "choose_candidates",
    "evaluate_judge",
    "load_labelled_set",
    "parse_model_counts",
    "report_json",
    "save_labelled_set",
    "serving",
]

MODES = ("group", "single", "consistency")
ITEM_RECORD_VERSION = 2  # 2: whole verdicts (evidence copies included) instead of their booleans
# JudgeConfig fields that only change how verdicts become rewards: no part of an item's cache key.
SCORING_ONLY = frozenset({"consensus_criterion", "consensus_points", "evidence_check", "score_teacher_answers", "rubric_refresh"})


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
    measured = cfg.model_copy(update={"score_teacher_answers": "off"})  # the candidates' rewards only
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
    """An item's rewards exactly as training computes them under `cfg` (ropd.reward.scoring), or None when it was not judged."""
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
    """Rewards recomputed from the stored verdicts with the given code checks (ropd.reward.scoring), then the quality figures.

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
