"""The judge: checks every answer of a group against a rubric.

Answers are shuffled deterministically (seeded by the caller, e.g. prompt id and step), labelled
Answer 1..N, and embedded between boundary lines the answers cannot forge. The reply must hold one
verdict per label with one boolean per criterion; anything else is re-asked. Verdicts are mapped
back to input order; the reward is computed from the booleans (ropd.reward.scoring): any total the judge
reports is ignored.

Modes (`judge.mode`): "group" judges the whole group in one call (as published); "single" makes one
call per answer; "consistency" draws `consistency_samples` verdicts per call (one request with `n`)
and decides each criterion by majority. Criteria are model-written text too: each is neutralised to one
line (`embed_line`) before the judge sees it. Turning verdicts into rewards, with the code checks
(verifiable targets, evidence check, consensus criterion), is ropd.reward.scoring's `score_verdicts`, and a
whole group (rubric, verdicts, rewards) is its `score_group`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ropd.config import EndpointConfig, JudgeConfig
from ropd.endpoints.llm import extract_json
from ropd.reward.prompts import VERIFIER_VARIABLES, boundary_code, embed_line, load_template
from ropd.reward.rubrics import CRITERION_MAX_CHARS
from ropd.reward.targets import clean_target
from ropd.tools.toolbox import add_tool_note, labelled_answer, show_tool_use
from ropd.types import Criterion, JudgeOutput, Rubric, Verdict

if TYPE_CHECKING:
    from ropd.endpoints.llm import LLMClient

EVIDENCE_MAX_CHARS = 24

log = logging.getLogger(__name__)


@dataclass
class JudgeTally:
    """Consistency-mode bookkeeping: verdict samples drawn, how many were complete, calls that fell back to one verdict."""

    samples: int = 0
    valid_samples: int = 0
    fallbacks: int = 0


class JudgeRequest(BaseModel):
    """The input file of `ropd judge`."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    rubric: Rubric
    answers: list[str] = Field(min_length=1)
    teacher_answers: list[str] = Field(
        default_factory=list, description="Teacher answers: they ground verifiable targets and give the consensus answer."
    )

    @field_validator("rubric")
    @classmethod
    def _scorable(cls, rubric: Rubric) -> Rubric:
        negative = [c.id for c in rubric.criteria if c.points < 0]
        if negative:
            raise ValueError(f"criteria {', '.join(negative)} have negative points")
        if rubric.total_points <= 0:
            raise ValueError("the criteria carry 0 points in total")
        return rubric


def shuffled_order(n: int, seed: int | str) -> list[int]:
    """A permutation of range(n) that depends only on n and the seed."""
    order = list(range(n))
    random.Random(f"judge-shuffle:{seed}").shuffle(order)
    return order


def verdict_schema(num_answers: int, num_criteria: int, expected: bool = False, answer: bool = True) -> dict[str, Any]:
    """The JSON schema sent to the judge: short evidence fields before the booleans (none with `answer` off).

    Writing the answer's final result first (and, with `expected`, the final result the rubric
    requires just before it) is what makes small judges discriminate; the contract only requires
    `answer` and `met`, so replies from servers that ignore the schema still parse.
    """
    evidence = {"type": "string", "maxLength": EVIDENCE_MAX_CHARS}
    properties: dict[str, Any] = {"answer": {"type": "integer", "minimum": 1, "maximum": num_answers}}
    if expected:
        properties["expected"] = evidence
    if answer or expected:
        properties["final_answer"] = evidence
    properties["met"] = {"type": "array", "items": {"type": "boolean"}, "minItems": num_criteria, "maxItems": num_criteria}
    verdict = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return {
        "type": "object",
        "properties": {"verdicts": {"type": "array", "items": verdict, "minItems": num_answers, "maxItems": num_answers}},
        "required": ["verdicts"],
        "additionalProperties": False,
    }


def check_verdicts(output: JudgeOutput, num_answers: int, num_criteria: int) -> None:
    """Raise ValueError (the client re-asks with it) unless there is one verdict per label, each complete."""
    labels = [v.answer for v in output.verdicts]
    expected = set(range(1, num_answers + 1))
    problems = []
    if len(labels) != num_answers:
        problems.append(f"{len(labels)} verdicts for {num_answers} answers")
    missing = sorted(expected - set(labels))
    if missing:
        problems.append(f"no verdict for answer(s) {', '.join(map(str, missing))}")
    extra = sorted({a for a in labels if a not in expected or labels.count(a) > 1})
    if extra:
        problems.append(f"answer label(s) {', '.join(map(str, extra))} unknown or repeated")
    short = [str(v.answer) for v in output.verdicts if len(v.met) != num_criteria]
    if short:
        problems.append(f"answer(s) {', '.join(short)} do not have exactly {num_criteria} booleans in 'met'")
    if problems:
        raise ValueError("; ".join(problems) + f". Give exactly one verdict for each answer 1..{num_answers}.")


def shown_criteria(rubric: Rubric) -> list[Criterion]:
    """The criteria as the judge template gets them: id, category and text neutralised to one line each
    (`embed_line`, the text cut to CRITERION_MAX_CHARS), a target only when usable (ropd.reward.targets rule 1)."""
    return [
        c.model_copy(
            update={
                "id": embed_line(c.id, 16) or "?",
                "category": embed_line(c.category, 32),
                "text": embed_line(c.text, CRITERION_MAX_CHARS) or "(empty criterion)",
                "target": clean_target(c.target)[0],
            }
        )
        for c in rubric.criteria
    ]


def verifier_messages(question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig) -> tuple[list[dict], str]:
    """The judge's chat messages for answers already in label order, and the template hash."""
    template = load_template(cfg.verifier_template, VERIFIER_VARIABLES)
    items = [labelled_answer(str(i), a) for i, a in enumerate(answers, start=1)]
    criteria = shown_criteria(rubric)
    boundary = boundary_code(question, *(c.text for c in criteria), *(i.text for i in items), salt="verifier")
    items, tool_use = show_tool_use(items, boundary)
    messages = template.render(
        question=question,
        criteria=criteria,
        answers=items,
        boundary=boundary,
        num_answers=len(items),
        num_criteria=len(rubric.criteria),
        expected_evidence=cfg.expected_evidence,
        answer_evidence=cfg.answer_evidence,
    )
    if tool_use:
        messages = add_tool_note(messages, boundary)
    return messages, template.hash


def judge_endpoint(endpoint: EndpointConfig, cfg: JudgeConfig) -> EndpointConfig:
    """The judge's endpoint for its mode: consistency samples at `consistency_temperature`, the other modes as configured."""
    if cfg.mode != "consistency":
        return endpoint
    return endpoint.model_copy(update={"temperature": cfg.consistency_temperature})


async def _judge_call(client: LLMClient, question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig) -> list[Verdict]:
    """One judge call; verdicts returned in the order of `answers` (label i+1 -> position i)."""
    messages, template_hash = verifier_messages(question, rubric, answers, cfg)
    n, k = len(answers), len(rubric.criteria)
    output = await client.chat_json(
        messages,
        JudgeOutput,
        json_schema=verdict_schema(n, k, cfg.expected_evidence, cfg.answer_evidence),
        check=lambda out: check_verdicts(out, n, k),
        key_extra={"kind": "verdicts", "template": template_hash},
    )
    return _in_label_order(output, n)


def _in_label_order(output: JudgeOutput, n: int) -> list[Verdict]:
    by_label = {v.answer: v for v in output.verdicts}
    return [by_label[i] for i in range(1, n + 1)]


def parse_verdicts(text: str, num_answers: int, num_criteria: int) -> JudgeOutput | None:
    """A complete JudgeOutput from one raw judge reply, or None when it does not parse or is incomplete."""
    try:
        output = JudgeOutput.model_validate(extract_json(text))
        check_verdicts(output, num_answers, num_criteria)
    except (ValueError, ValidationError):
        return None
    return output


def majority_verdicts(outputs: list[JudgeOutput], num_answers: int) -> list[Verdict]:
    """Per answer and criterion, met when more than half of the sampled verdicts say so (a tie is not met).

    Each verdict keeps the evidence fields of the first sample, plus `votes`: per criterion, how many samples said met.
    """
    ordered = [_in_label_order(output, num_answers) for output in outputs]
    merged = []
    for label in range(num_answers):
        samples = [verdicts[label] for verdicts in ordered]
        votes = [sum(column) for column in zip(*(v.met for v in samples), strict=True)]
        extra = {**(samples[0].model_extra or {}), "votes": votes}
        merged.append(Verdict(answer=label + 1, met=[2 * v > len(samples) for v in votes], **extra))
    return merged


async def _consistency_call(
    client: LLMClient, question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig, tally: JudgeTally | None
) -> list[Verdict]:
    """`consistency_samples` verdicts from one request (n), merged by majority; one ordinary call when none is complete."""
    messages, template_hash = verifier_messages(question, rubric, answers, cfg)
    n, k = len(answers), len(rubric.criteria)
    texts = await client.chat(
        messages,
        n=cfg.consistency_samples,
        key_extra={"kind": "verdict-samples", "template": template_hash},
        json_schema=verdict_schema(n, k, cfg.expected_evidence, cfg.answer_evidence),
    )
    outputs = [out for out in (parse_verdicts(t, n, k) for t in texts) if out is not None]
    if tally is not None:
        tally.samples += len(texts)
        tally.valid_samples += len(outputs)
    if outputs:
        return majority_verdicts(outputs, n)
    log.info("%s: none of %d sampled verdicts was complete; asking for one verdict with re-asks", client.role, len(texts))
    if tally is not None:
        tally.fallbacks += 1
    return await _judge_call(client, question, rubric, answers, cfg)


async def judge_verdicts(
    client: LLMClient,
    question: str,
    rubric: Rubric,
    answers: list[str],
    cfg: JudgeConfig,
    seed: int | str,
    tally: JudgeTally | None = None,
) -> list[Verdict]:
    """Verdicts for `answers`, in input order (each keeps the label it was shown under).

    The answers are shuffled by `seed`, then judged in one call, in calls of `cfg.chunk_size`
    answers, or one call per answer (mode "single"), calls running concurrently; in mode
    "consistency" each call draws several verdicts (the client should sample: see `judge_endpoint`).
    Raises LLMError when any call yields no valid verdicts.
    """
    if not answers:
        return []
    order = shuffled_order(len(answers), seed)
    shown = [answers[i] for i in order]
    size = 1 if cfg.mode == "single" else cfg.chunk_size or len(shown)
    chunks = [shown[start : start + size] for start in range(0, len(shown), size)]
    if cfg.mode == "consistency":
        calls = [_consistency_call(client, question, rubric, chunk, cfg, tally) for chunk in chunks]
    else:
        calls = [_judge_call(client, question, rubric, chunk, cfg) for chunk in chunks]
    results = await asyncio.gather(*calls)
    flat = [v for chunk in results for v in chunk]
    verdicts: list[Verdict | None] = [None] * len(answers)
    for position, original in enumerate(order):
        verdicts[original] = flat[position]
    return verdicts  # type: ignore[return-value]


async def judge_answers(
    client: LLMClient, question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig, seed: int | str
) -> list[list[bool]]:
    """One list of booleans (rubric order) per answer, in input order."""
    return [v.met for v in await judge_verdicts(client, question, rubric, answers, cfg, seed)]
