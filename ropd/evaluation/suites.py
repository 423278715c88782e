"""The papers' evaluation suites: their Hub releases read into prompt rows whose reference answer fixes the scoring.

    rows = load_suite("aime24")                        # from the Hub
    rows = load_suite("gpqa-diamond", "gpqa.parquet")  # a local copy in the release's own columns

Scoring is `ropd.reward.answers.is_correct` on each row's reference, so every suite is checked by its own rule:
  aime24, aime25, hmmt25   math: the final answer (\\boxed{...} first) against the reference, as numbers or with math-verify
  gpqa-diamond             multiple choice: the four options shuffled per question (seeded by its text), lettered A-D;
                           the letter the answer commits to against the correct option's letter

Both papers evaluate sampled avg@k: ROPD (arXiv 2605.07396) 16 samples per prompt at temperature 1.0, top-p 0.95
(`PUBLISHED_PROTOCOL`, `ropd eval --protocol published`); SOD (arXiv 2605.07725) reports avg@32. Their other suites
have no loader here (`UNSUPPORTED` says why).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ropd.data import DataError, read_rows
from ropd.types import PromptRow

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option on the last line, as 'Answer: X'."
LETTERS = "ABCD"
PUBLISHED_PROTOCOL: dict[str, Any] = {"n_samples": 16, "temperature": 1.0, "top_p": 0.95}  # ROPD's avg@16
UNSUPPORTED = {
    "ifeval": "IFEval's instruction checks (lm-eval's ifeval task) need NLTK tokenizer data downloaded at run time, which "
    "an offline install cannot provide; no loader here yet",
    "healthbench": "HealthBench is scored by a model-written rubric grader; no loader here yet",
    "livecodebench": "LiveCodeBench runs the answers' code against tests; no loader here yet",
}


@dataclass(frozen=True)
class Suite:
    """A Hub release, and how one of its rows becomes a prompt row with its reference answer."""

    hub_id: str
    split: str
    to_row: Callable[[dict[str, Any], int], dict[str, Any]]
    config: str | None = None


def _math(question: str, answer: str, id_field: str | None = None) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    """A math release's row: its question with the boxed-answer instruction, its answer as the reference."""

    def to_row(raw: dict[str, Any], index: int) -> dict[str, Any]:
        row_id = raw.get(id_field) if id_field else None
        prompt = f"{_field(raw, question, index)}\n\n{MATH_INSTRUCTION}"
        return {"id": str(row_id if row_id is not None else index), "prompt": prompt, "answer": str(_field(raw, answer, index))}

    return to_row


def _gpqa(raw: dict[str, Any], index: int) -> dict[str, Any]:
    """A GPQA row: the correct and three incorrect answers shuffled (seeded by the question), lettered A-D."""
    question = str(_field(raw, "Question", index)).strip()
    correct = str(_field(raw, "Correct Answer", index)).strip()
    options = [correct, *(str(_field(raw, f"Incorrect Answer {i}", index)).strip() for i in (1, 2, 3))]
    seed = int(hashlib.sha256(question.encode()).hexdigest()[:16], 16)
    random.Random(seed).shuffle(options)
    lines = "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, options, strict=True))
    row_id = raw.get("Record ID") or index
    return {"id": str(row_id), "prompt": f"{question}\n\n{lines}\n\n{CHOICE_INSTRUCTION}", "answer": LETTERS[options.index(correct)]}


def _field(raw: dict[str, Any], name: str, index: int) -> Any:
    if raw.get(name) is None:
        raise DataError(f"row {index + 1}: field '{name}' is missing (columns: {', '.join(sorted(raw))})")
    return raw[name]


SUITES: dict[str, Suite] = {
    "aime24": Suite("HuggingFaceH4/aime_2024", "train", _math("problem", "answer", "id")),
    "aime25": Suite("math-ai/aime25", "test", _math("problem", "answer", "id")),
    "hmmt25": Suite("MathArena/hmmt_feb_2025", "train", _math("problem", "answer", "problem_idx")),
    "gpqa-diamond": Suite("Idavidrein/gpqa", "train", _gpqa, config="gpqa_diamond"),
}


def load_suite(name: str, source: str | None = None, max_prompts: int | None = None, system_prompt: str | None = None) -> list[PromptRow]:
    """The prompt rows of suite `name`, from its Hub release or from `source`, a local file in the release's columns;
    `system_prompt`, when given, opens every prompt."""
    if name in UNSUPPORTED:
        raise DataError(f"suite '{name}': {UNSUPPORTED[name]}")
    suite = SUITES.get(name)
    if suite is None:
        raise DataError(f"unknown suite '{name}'; choose one of {', '.join(SUITES)}")
    raw = read_rows(source, "train") if source else read_rows(suite.hub_id, suite.split, suite.config)
    where = source or suite.hub_id
    try:
        rows = [PromptRow.model_validate(_with_messages(suite.to_row(r, i), system_prompt)) for i, r in enumerate(raw[:max_prompts])]
    except DataError as exc:
        raise DataError(f"suite '{name}' ({where}), {exc}") from None
    if not rows:
        raise DataError(f"suite '{name}' ({where}): no rows")
    return rows


def _with_messages(row: dict[str, Any], system_prompt: str | None) -> dict[str, Any]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {**row, "prompt": [*system, {"role": "user", "content": row["prompt"]}]}
