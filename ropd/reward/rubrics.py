"""Rubric induction: an LLM writes a prompt-specific rubric by contrasting teacher and student answers.

`induce_rubric` renders the rubricator template, asks for JSON matching `Rubric` under a JSON schema
built from the configured bounds, and has the client re-ask when the reply breaks them (duplicate
ids, too few or too many criteria, points out of range); a criterion that repeats another's text is
dropped, and a re-ask follows only when too few distinct ones remain. `RubricStore` decides when a
prompt's rubric is reused instead of induced again. `consensus_answer` and
`consensus_criterion` make the optional criterion that code, not the judge, checks. With
`judge.verifiable_criteria` the rubricator is also asked for a `target` per criterion (ropd.reward.targets).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ropd.config import JudgeConfig
from ropd.reward.answers import answers_match, extract_final_answer, is_correct, numeric_answers
from ropd.reward.prompts import RUBRIC_VARIABLES, boundary_code, load_template
from ropd.reward.targets import TARGET_MAX_CHARS
from ropd.tools.toolbox import add_tool_note, labelled_answer, show_tool_use
from ropd.types import Criterion, Rubric

if TYPE_CHECKING:
    from ropd.endpoints.llm import LLMClient

CRITERION_MAX_CHARS = 400
CONSENSUS_ID = "consensus"


class RubricRequest(BaseModel):
    """The input file of `ropd rubric`."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    teacher_answers: list[str] = Field(min_length=1)
    student_answers: list[str]


def rubric_schema(cfg: JudgeConfig) -> dict[str, Any]:
    """The JSON schema sent to the rubricator: the `Rubric` contract with the configured bounds.

    With `verifiable_criteria`, every criterion also carries a `target` string ("" for none) after its text.
    """
    properties: dict[str, Any] = {
        "id": {"type": "string", "minLength": 1, "maxLength": 16},
        "category": {"type": "string", "maxLength": 32},
        "text": {"type": "string", "minLength": 1, "maxLength": CRITERION_MAX_CHARS},
    }
    if cfg.verifiable_criteria:
        properties["target"] = {"type": "string", "maxLength": TARGET_MAX_CHARS}
    properties["points"] = {"type": "integer", "minimum": cfg.min_points, "maximum": cfg.max_points}
    criterion = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return {
        "type": "object",
        "properties": {"criteria": {"type": "array", "items": criterion, "minItems": cfg.min_criteria, "maxItems": cfg.max_criteria}},
        "required": ["criteria"],
        "additionalProperties": False,
    }


def without_repeats(rubric: Rubric) -> Rubric:
    """The rubric without criteria whose text repeats an earlier one (small rubricators often repeat themselves)."""
    seen: set[str] = set()
    kept = []
    for c in rubric.criteria:
        key = " ".join(c.text.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return rubric if len(kept) == len(rubric.criteria) else rubric.model_copy(update={"criteria": kept})


def check_rubric(rubric: Rubric, cfg: JudgeConfig) -> None:
    """Raise ValueError (the client re-asks with this message) when a parsed rubric is unusable.

    Repeated criteria are dropped (see `induce_rubric`), so the bounds apply to the distinct ones.
    """
    distinct = without_repeats(rubric)
    repeated = len(distinct.criteria) < len(rubric.criteria)
    if repeated and len(distinct.criteria) < cfg.min_criteria:
        raise ValueError(
            f"only {len(distinct.criteria)} of the {len(rubric.criteria)} criteria have different texts (the others repeat the "
            f"same text); at least {cfg.min_criteria} criteria that each check something different are required"
        )
    distinct.check_bounds(cfg.min_criteria, cfg.max_criteria, cfg.min_points, cfg.max_points)
    if distinct.total_points <= 0:
        raise ValueError("the criteria carry 0 points in total; at least one criterion needs positive points")


def reference_labels(n: int) -> list[str]:
    """A, B, C, ... then A2, B2, ... for more than 26 references."""
    letters = string.ascii_uppercase
    return [letters[i % 26] + (str(i // 26 + 1) if i >= 26 else "") for i in range(n)]


def rubric_messages(question: str, teacher_answers: list[str], student_answers: list[str], cfg: JudgeConfig) -> tuple[list[dict], str]:
    """The rubricator's chat messages and the template hash (for the cache key)."""
    template = load_template(cfg.rubric_template, RUBRIC_VARIABLES)
    references = [labelled_answer(label, t) for label, t in zip(reference_labels(len(teacher_answers)), teacher_answers, strict=True)]
    students = [labelled_answer(str(i), s) for i, s in enumerate(student_answers, start=1)]
    boundary = boundary_code(question, *(r.text for r in references), *(s.text for s in students), salt="rubric")
    references, teacher_tools = show_tool_use(references, boundary)
    students, student_tools = show_tool_use(students, boundary)
    messages = template.render(
        question=question,
        references=references,
        students=students,
        boundary=boundary,
        extra_instructions=cfg.extra_instructions or "",
        min_criteria=cfg.min_criteria,
        max_criteria=cfg.max_criteria,
        min_points=cfg.min_points,
        max_points=cfg.max_points,
        verifiable_criteria=cfg.verifiable_criteria,
        target_max_chars=TARGET_MAX_CHARS,
    )
    if teacher_tools or student_tools:
        messages = add_tool_note(messages, boundary)
    return messages, template.hash


async def induce_rubric(
    client: LLMClient, question: str, teacher_answers: list[str], student_answers: list[str], cfg: JudgeConfig
) -> Rubric:
    """Ask the rubricator for a rubric; raises LLMError when no valid rubric came after the re-asks."""
    if not teacher_answers:
        raise ValueError("induce_rubric needs at least one teacher answer")
    messages, template_hash = rubric_messages(question, teacher_answers, student_answers, cfg)
    bounds = [cfg.min_criteria, cfg.max_criteria, cfg.min_points, cfg.max_points]
    rubric = await client.chat_json(
        messages,
        Rubric,
        json_schema=rubric_schema(cfg),
        check=lambda rubric: check_rubric(rubric, cfg),
        key_extra={"kind": "rubric", "template": template_hash, "bounds": bounds},
    )
    return without_repeats(rubric)


def consensus_answer(teacher_answers: list[str]) -> str | None:
    """The final answer more than half of the teacher answers give (compared as numbers or mathematics), else None.

    None also when there are no teacher answers, or when fewer than half of them give a final answer: a last number is
    read as one only when the answers look numeric (`numeric_answers`), so open-ended answers yield no spurious
    consensus. With one teacher answer, its final answer.
    """
    numeric = numeric_answers(teacher_answers)
    finals = [extract_final_answer(a, numeric=numeric) for a in teacher_answers]
    given = [f for f in finals if f is not None]
    if 2 * len(given) < len(teacher_answers):
        return None
    for candidate in given:
        if 2 * sum(answers_match(other, candidate) for other in given) > len(teacher_answers):
            return candidate
    return None


def consensus_criterion(rubric: Rubric, answer: str, points: int) -> Criterion:
    """The code-checked criterion "final answer equals the teachers' consensus", with an id unused in `rubric`."""
    ids = {c.id for c in rubric.criteria}
    cid = next(f"{CONSENSUS_ID}{i or ''}" for i in range(len(ids) + 1) if f"{CONSENSUS_ID}{i or ''}" not in ids)
    text = f"The final answer equals {answer}, the answer most teacher answers give (checked by code, not by the judge)."
    return Criterion(id=cid, category="correctness", text=text, points=points)


def meets_consensus(answer: str, consensus: str) -> bool:
    """Whether an answer's final answer equals the consensus answer (numbers, math-verify, normalised text)."""
    return is_correct(answer, consensus)


def refresh_interval(refresh: str | int) -> int | None:
    """Steps a rubric stays in use: 1 for "step", None (forever) for "prompt", N for an int."""
    if refresh == "step":
        return 1
    if refresh == "prompt":
        return None
    if isinstance(refresh, int) and not isinstance(refresh, bool) and refresh >= 1:
        return refresh
    raise ValueError(f"rubric_refresh must be 'step', 'prompt' or a positive integer, got {refresh!r}")


@dataclass
class _Stored:
    rubric: Rubric
    step: int


class RubricStore:
    """Keeps each prompt's latest rubric and says whether it may be reused at a given step.

    "step": a new rubric every step (as published); "prompt": one rubric per prompt for the whole
    run; N: a new rubric every N steps (reused while step - step_induced < N).
    """

    def __init__(self, refresh: str | int = "step"):
        self.interval = refresh_interval(refresh)
        self._rubrics: dict[str, _Stored] = {}

    def get(self, prompt_id: str, step: int) -> Rubric | None:
        """The rubric to reuse for this prompt at this step, or None when a new one is due."""
        stored = self._rubrics.get(prompt_id)
        if stored is None or step < stored.step:
            return None
        if self.interval is None or step - stored.step < self.interval:
            return stored.rubric
        return None

    def put(self, prompt_id: str, step: int, rubric: Rubric) -> None:
        self._rubrics[prompt_id] = _Stored(rubric, step)

    def __len__(self) -> int:
        return len(self._rubrics)
