"""Answers: the text a completion commits to, its final answer, and whether that answer is right.

The one place ropd reads answers. The rubric reward, the rubricator and judge prompts, the consensus
criterion, the verifiable-targets check and evaluation all go through it, so they agree on what an
answer is:

  completion_text                        a completion (string, chat message or message list) -> its text
  final_text / answer_text               the part after the reasoning (see below)
  extract_final_answer / extract_choice  the answer a completion commits to, or None
  numeric_answers                        whether answers of an unknown task look numeric
  is_correct / answers_match             checking against a reference answer
  outcome_reward                         a TRL GRPOTrainer reward function (1.0 correct, 0.0 wrong)

The reasoning rule: the answer part of a completion is the text after its last `</think>`. A
completion that opens `<think>` (anywhere) and never closes it has no answer part: the model was cut
off while reasoning. `final_text` gives None for it and `answer_text`, which is what the rubricator
and the judge are shown, gives "". A completion without reasoning tags is all answer.

Checking picks the strictest scorer that applies: reasoning-gym's own scorer when the row names a
reasoning-gym task, a letter match for multiple-choice references, numeric comparison, math-verify
for mathematical expressions, and a normalised exact match for everything else.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
from fractions import Fraction
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MAX_CHECKED_CHARS = 500  # longer extracted answers skip the symbolic checker (bounded sympy time)


# --- completion text and the reasoning rule -------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text the model wrote, from a string, a chat message or a list of messages. Never raises.

    Of a message list, only the assistant turns count (a message without a role is one), joined by
    newlines; a list without any has no text (""). Content given as parts keeps their text parts.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list | tuple):
        turns = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "\n".join(_content_text(m.get("content")) for m in turns)
    return str(completion)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return "" if content is None else str(content)


def final_text(text: str) -> str | None:
    """The part of a completion after its reasoning: the text after the last `</think>`, as written.

    None when a `<think>` block was opened and never closed (the model never reached an answer).
    """
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        return None
    return text


def answer_text(text: str) -> str:
    """`final_text` stripped, "" when there is none: the answer as the rubricator and the judge see it."""
    return (final_text(text) or "").strip()


# --- extraction -----------------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_PHRASE = re.compile(r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:|=)\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?/\d+(?:\.\d+)?|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_LAST_SENTENCE = re.compile(r"[.!?](?:\s+|$)")
_CHOICE_REFERENCE = re.compile(r"\(?([A-J])\)?\.?")
_CHOICE_IN_ANSWER = re.compile(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])")
_CHOICE_AT_END = re.compile(r"(?<![A-Za-z'])([A-J])[.!]?\s*$")
_CHOICE_LINE = re.compile(r"\(?([A-J])[).:](?:\s.*)?")


def extract_final_answer(text: Any, numeric: bool = True) -> str | None:
    """The final answer a completion commits to, as written, or None when it gives none.

    Looks after the last `</think>` only, and takes the first of: the last <answer>...</answer>,
    the last \\boxed{...}, the last "#### X", the last "answer is X" / "Answer: X", the whole text
    when it is one line without other numbers, and finally, for a numeric task only (`numeric`), the last number.
    For any other task a text that marks no answer has none: its last number is no guess worth making.
    """
    if not isinstance(text, str):
        return None
    body = final_text(text)
    if body is None or not body.strip():
        return None
    found = _marked_answer(body) or _short_line(body) or (_last_number(body) if numeric else None)
    return found or None


def numeric_answers(texts: list[str]) -> bool:
    """Whether answers of an unknown task look numeric: most of them mark a number as their final answer or, marking
    none, hold a number in their last sentence (an essay whose numbers sit earlier in the text does not)."""
    return 2 * sum(_looks_numeric(text) for text in texts) > len(texts)


def _looks_numeric(text: str) -> bool:
    body = final_text(text) or ""
    marked = extract_final_answer(text, numeric=False)
    if marked is not None:
        return _as_number(marked) is not None
    sentences = [part for part in _LAST_SENTENCE.split(body.strip()) if part.strip()]
    return bool(sentences) and _NUMBER.search(sentences[-1]) is not None


def extract_choice(text: Any) -> str | None:
    """The multiple-choice letter (A-J) a completion commits to, or None."""
    if not isinstance(text, str):
        return None
    body = final_text(text)
    if body is None:
        return None
    marked = _marked_answer(body)
    if marked:
        match = _CHOICE_IN_ANSWER.search(marked)
        return match.group(1) if match else None
    stripped = _clean(body)
    match = _CHOICE_LINE.fullmatch(stripped) or _CHOICE_REFERENCE.fullmatch(stripped)
    if match:
        return match.group(1)
    letters = re.findall(r"\(([A-J])\)", body)
    if letters:
        return letters[-1]
    trailing = _CHOICE_AT_END.search(body)
    return trailing.group(1) if trailing else None


def _marked_answer(body: str) -> str | None:
    """An answer the text marks explicitly (tag, box, ####, "answer is")."""
    tags = _ANSWER_TAG.findall(body)
    if tags and tags[-1].strip():
        return _clean(tags[-1])
    boxed = _last_boxed(body)
    if boxed is not None and boxed.strip():
        return _clean(boxed)
    hashes = _HASHES.findall(body)
    if hashes and hashes[-1].strip():
        return _clean(hashes[-1])
    phrases = _ANSWER_PHRASE.findall(body)
    if phrases:
        phrase = _SENTENCE_END.split(phrases[-1], maxsplit=1)[0]
        if _clean(phrase):
            return _clean(phrase)
    return None


def _last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} or \\fbox{...} with balanced braces; None if absent or cut off."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].split("{", 1)
    if len(rest) < 2:
        return None
    depth, chars = 1, []
    for char in rest[1]:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return "".join(chars)
        chars.append(char)
    return None


def _short_line(body: str) -> str | None:
    """The whole text when it is a single line (at most 200 characters) that is either a bare number or has no digits."""
    line = _clean(body)
    if "\n" in line or len(line) > 200 or not any(c.isalnum() for c in line):
        return None
    if any(c.isdigit() for c in line) and _as_number(line) is None:
        return None
    return line


def _last_number(body: str) -> str | None:
    numbers = _NUMBER.findall(body)
    return numbers[-1] if numbers else None


def _clean(text: str) -> str:
    """Strip whitespace, markdown emphasis, enclosing math delimiters and a trailing full stop."""
    text = text.strip().strip("*_`").strip()
    for left, right in (("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")):
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
            break
    return text.removesuffix(".").strip().strip("*_`").strip()


# --- numbers --------------------------------------------------------------------------------------

_NUMERIC = re.compile(
    r"(?:[$€£¥]|usd|eur|gbp)?\s*(?P<sign>[+-]?)\s*(?:[$€£¥])?\s*"
    r"(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|\.\d+)"
    r"\s*(?P<unit>[^\d=]*)",
    re.IGNORECASE,
)


def _as_number(text: str) -> Fraction | None:
    """The value of an answer that is one number, allowing currency, thousands commas and a unit ("$1,200", "12 km")."""
    if not isinstance(text, str) or len(text) > 100:
        return None
    text = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r" \1", text)
    text = text.replace("\\$", "$").replace("{,}", ",").replace("\\%", "%").replace("\\!", "").replace("\\,", "")
    text = re.sub(r"^[a-zA-Z]\s*=\s*", "", text.strip()).removesuffix(".")  # "x = 5", "12."
    match = _NUMERIC.fullmatch(text.strip())
    if not match:
        return None
    unit = match.group("unit").strip()
    if unit and not re.fullmatch(r"[%A-Za-z][A-Za-z%/^.\s²³'-]*", unit):
        return None
    value = match.group("value").replace(",", "")
    try:
        numerator, _, denominator = value.partition("/")
        number = Fraction(numerator) / Fraction(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return -number if match.group("sign") == "-" else number


def _numbers_equal(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))


def canonical_number(text: str) -> str | None:
    """A number answer in plain form ("$1,200.00" -> "1200"), or None when `text` is not one number."""
    number = _as_number(text)
    if number is None:
        return None
    if number.denominator == 1:
        return str(number.numerator)
    return format(float(number), ".10g")


# --- checking -------------------------------------------------------------------------------------


def is_correct(completion: Any, reference: Any, task: str | None = None, metadata: dict | str | None = None) -> bool:
    """Whether a completion's final answer matches the reference answer. Never raises on odd model output.

    `task` naming a reasoning-gym task selects that task's own scorer (given `metadata`, the
    generator's entry metadata, when the scorer needs it); otherwise the reference's form decides:
    a letter A-J is multiple choice, else numbers, math-verify and normalised text are tried.
    """
    if reference is None or not str(reference).strip():
        return False
    text, reference = completion_text(completion), str(reference).strip()
    if task and is_reasoning_gym_task(task):
        return _reasoning_gym_correct(text, reference, task, metadata)
    choice = _CHOICE_REFERENCE.fullmatch(reference)
    if choice:
        return extract_choice(text) == choice.group(1)
    answer = extract_final_answer(text, numeric=_looks_mathematical(reference))
    if answer is None:
        return False
    return answers_match(answer, reference)


def answers_match(answer: str, reference: str) -> bool:
    """Whether an extracted answer equals the reference: as numbers, as text, or as mathematics (math-verify)."""
    ref_number, number = _as_number(reference), _as_number(answer)
    if ref_number is not None and number is not None:
        return _numbers_equal(number, ref_number)
    if _normalise_text(answer) == _normalise_text(reference):
        return True
    return _looks_mathematical(reference) and _math_equal(answer, reference)


def _looks_mathematical(text: str) -> bool:
    """Digits, LaTeX, or operators between short symbols: math-verify would read word lists as sets of symbols."""
    return bool(re.search(r"[\d\\]", text)) or (bool(re.search(r"[=+\-*/^]", text)) and not re.search(r"[A-Za-z]{3,}", text))


def _normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", _clean(text)).casefold()


def _math_equal(answer: str, reference: str) -> bool:
    if len(answer) > MAX_CHECKED_CHARS or len(reference) > MAX_CHECKED_CHARS:
        return False
    from math_verify import verify

    gold, predicted = _math_parse(reference), _math_parse(answer)
    if not gold or not predicted:
        return False
    try:
        return bool(verify(gold, predicted, timeout_seconds=_math_timeout()))
    except Exception:  # sympy can fail in many ways on odd expressions; that is "not equal"
        log.debug("math-verify failed on %r vs %r", answer, reference, exc_info=True)
        return False


def _math_parse(text: str) -> list:
    """math-verify's parse of an answer: as written when it has math delimiters, else boxed (then bare)."""
    from math_verify import parse

    wrapped = "$" in text or "\\boxed" in text
    for candidate in (text,) if wrapped else (f"\\boxed{{{text}}}", text):
        try:
            parsed = parse(candidate, parsing_timeout=_math_timeout())
        except Exception:  # unparseable is a normal outcome for model text
            parsed = []
        if parsed:
            return parsed
    return []


def _math_timeout() -> int | None:
    """math-verify's timeouts use SIGALRM, which works only on the main thread."""
    return 5 if threading.current_thread() is threading.main_thread() else None


# --- reasoning-gym --------------------------------------------------------------------------------


def is_reasoning_gym_task(task: str) -> bool:
    if importlib.util.find_spec("reasoning_gym") is None:
        return False
    from reasoning_gym.factory import DATASETS

    return task in DATASETS


@cache
def _reasoning_gym_scorer(task: str):
    from reasoning_gym import get_score_answer_fn

    return get_score_answer_fn(task)


def _reasoning_gym_correct(text: str, reference: str, task: str, metadata: dict | str | None) -> bool:
    """Score with the task's own scorer; only a full score (1.0) counts as correct.

    When the scorer cannot run (most often: it needs the generator's metadata and the row has
    none), the generic comparison decides instead.
    """
    answer = extract_final_answer(text)
    if answer is None:
        return False
    candidates = [answer]
    number = canonical_number(answer)
    if number is not None and number != answer:
        candidates.append(number)  # reasoning-gym's numeric scorers read "1,200" as 1
    entry = {"question": "", "answer": reference, "metadata": _metadata_dict(metadata)}
    scored = False
    for candidate in candidates:
        try:
            score = float(_reasoning_gym_scorer(task)(candidate, entry))
        except Exception:  # task scorers raise on malformed answers or missing metadata
            log.debug("reasoning-gym scorer for %s failed on %r", task, candidate, exc_info=True)
            continue
        scored = True
        if score >= 1.0 - 1e-9:
            return True
    if not scored:
        _warn_once(f"reasoning-gym's scorer for '{task}' could not run (rows without metadata?); comparing answers directly")
        return answers_match(answer, reference)
    return False


@cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _metadata_dict(metadata: dict | str | None) -> dict:
    if isinstance(metadata, dict):
        return metadata
    if isinstance(metadata, str) and metadata.strip():
        try:
            value = json.loads(metadata)
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


# --- TRL reward function --------------------------------------------------------------------------


def outcome_reward(
    prompts: list, completions: list, answer: list | None = None, task: list | str | None = None, **kwargs: Any
) -> list[float | None]:
    """GRPOTrainer reward: 1.0 when a completion's final answer is correct, 0.0 otherwise.

    `answer` (and `task`, `metadata` when present) arrive as dataset columns aligned with
    `completions`. A row without a reference answer gets None, which TRL treats as "no reward".
    """
    if answer is None:
        raise ValueError("outcome_reward needs an 'answer' column in the training dataset (the reference answers)")
    size = len(completions)
    tasks = task if isinstance(task, list | tuple) else [task] * size
    metadata = kwargs.get("metadata")
    metadata = metadata if isinstance(metadata, list | tuple) else [metadata] * size
    return [
        None if reference is None or not str(reference).strip() else float(is_correct(completion, reference, row_task, row_metadata))
        for completion, reference, row_task, row_metadata in zip(completions, answer, tasks, metadata, strict=True)
    ]
