"""The judge: checks every answer of a group against a rubric in one batched call.

Answers are shuffled deterministically (seeded by the caller, e.g. prompt id and step), labelled
Answer 1..N, and embedded between boundary lines the answers cannot forge. The reply must hold one
verdict per label with one boolean per criterion; anything else is re-asked. Verdicts are mapped
back to input order, and the reward is computed here from the booleans: any total the judge
reports is ignored.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ropd.config import JudgeConfig
from ropd.prompts import VERIFIER_VARIABLES, LabelledText, boundary_code, final_text, load_template
from ropd.types import JudgeOutput, Rubric, Verdict

if TYPE_CHECKING:
    from ropd.llm import LLMClient

EVIDENCE_MAX_CHARS = 24


class JudgeRequest(BaseModel):
    """The input file of `ropd judge`."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    rubric: Rubric
    answers: list[str] = Field(min_length=1)

    @field_validator("rubric")
    @classmethod
    def _scorable(cls, rubric: Rubric) -> Rubric:
        negative = [c.id for c in rubric.criteria if c.points < 0]
        if negative:
            raise ValueError(f"criteria {', '.join(negative)} have negative points")
        if rubric.total_points <= 0:
            raise ValueError("the criteria carry 0 points in total")
        return rubric


def rubric_reward(rubric: Rubric, met: list[bool]) -> float:
    """sum(points of met criteria) / sum(points), in [0, 1]."""
    if len(met) != len(rubric.criteria):
        raise ValueError(f"{len(met)} booleans for a rubric of {len(rubric.criteria)} criteria")
    total = rubric.total_points
    if total <= 0:
        raise ValueError("the rubric carries 0 points in total")
    return sum(c.points for c, ok in zip(rubric.criteria, met, strict=True) if ok) / total


def shuffled_order(n: int, seed: int | str) -> list[int]:
    """A permutation of range(n) that depends only on n and the seed."""
    order = list(range(n))
    random.Random(f"judge-shuffle:{seed}").shuffle(order)
    return order


def verdict_schema(num_answers: int, num_criteria: int) -> dict[str, Any]:
    """The JSON schema sent to the judge: a short final-answer field before the booleans.

    Writing the answer's final result first is what makes small judges discriminate; the contract
    only requires `answer` and `met`, so replies from servers that ignore the schema still parse.
    """
    verdict = {
        "type": "object",
        "properties": {
            "answer": {"type": "integer", "minimum": 1, "maximum": num_answers},
            "final_answer": {"type": "string", "maxLength": EVIDENCE_MAX_CHARS},
            "met": {"type": "array", "items": {"type": "boolean"}, "minItems": num_criteria, "maxItems": num_criteria},
        },
        "required": ["answer", "final_answer", "met"],
        "additionalProperties": False,
    }
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


def verifier_messages(question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig) -> tuple[list[dict], str]:
    """The judge's chat messages for answers already in label order, and the template hash."""
    template = load_template(cfg.verifier_template, VERIFIER_VARIABLES)
    items = [LabelledText(str(i), final_text(a)) for i, a in enumerate(answers, start=1)]
    boundary = boundary_code(question, *(c.text for c in rubric.criteria), *(i.text for i in items), salt="verifier")
    messages = template.render(
        question=question,
        criteria=rubric.criteria,
        answers=items,
        boundary=boundary,
        num_answers=len(items),
        num_criteria=len(rubric.criteria),
    )
    return messages, template.hash


async def _judge_call(client: LLMClient, question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig) -> list[Verdict]:
    """One judge call; verdicts returned in the order of `answers` (label i+1 -> position i)."""
    messages, template_hash = verifier_messages(question, rubric, answers, cfg)
    n, k = len(answers), len(rubric.criteria)
    output = await client.chat_json(
        messages,
        JudgeOutput,
        json_schema=verdict_schema(n, k),
        check=lambda out: check_verdicts(out, n, k),
        key_extra={"kind": "verdicts", "template": template_hash},
    )
    by_label = {v.answer: v for v in output.verdicts}
    return [by_label[i] for i in range(1, n + 1)]


async def judge_verdicts(
    client: LLMClient, question: str, rubric: Rubric, answers: list[str], cfg: JudgeConfig, seed: int | str
) -> list[Verdict]:
    """Verdicts for `answers`, in input order (each keeps the label it was shown under).

    The answers are shuffled by `seed`, then judged in one call, or in calls of `cfg.chunk_size`
    answers run concurrently. Raises LLMError when any call yields no valid verdicts.
    """
    if not answers:
        return []
    order = shuffled_order(len(answers), seed)
    shown = [answers[i] for i in order]
    size = cfg.chunk_size or len(shown)
    chunks = [shown[start : start + size] for start in range(0, len(shown), size)]
    results = await asyncio.gather(*(_judge_call(client, question, rubric, chunk, cfg) for chunk in chunks))
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
