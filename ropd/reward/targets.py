"""Verifiable criteria: when code, not the judge, decides a criterion from the value a correct answer contains.

With `judge.verifiable_criteria` on, the rubricator may give a criterion a `target`: a number or a short
string a correct answer contains. These are all the rules for checking one:

1. Usable (`clean_target`). A target is dropped (the criterion stays with the judge) when it is absent or
   empty, a placeholder ("none", "n/a", ...), longer than TARGET_MAX_CHARS characters, or holds anything
   but letters, digits, spaces and the few marks numbers and short answers need (`. , - + / % $ € £ ¥ : ' ( )`):
   control or invisible characters, angle brackets (boundary lines), braces, backslashes, `^`, `*`, quotes
   and the like are refused outright, never cleaned up. A target is only ever compared as data: never
   evaluated, never used as a regular expression.
2. Grounded (`ground_target`), against the teacher answers, so a value the rubricator copied from a wrong
   student answer is not trusted:
   - a *final-result* target equals the final answer (`ropd.reward.answers.extract_final_answer`, compared with
     `answers_match`: numbers numerically, else normalised text or math-verify) of at least half of the
     teacher answers;
   - otherwise an *intermediate* target occurs (rule 3) in the final text (after the last `</think>`) of
     at least half of the teacher answers. An intermediate target that also occurs in the question is
     dropped (restating the question proves nothing), and a non-numeric one needs at least 3 characters.
   Anything else is ungrounded and dropped.
3. Checked (`meets_target`) against an answer's final text (`ropd.reward.answers.answer_text`: after the last
   `</think>`; nothing when a `<think>` never closed):
   - a final-result target is met only when the answer's *extracted final answer* matches it
     (`answers_match`), so an answer that writes the right value on the way and ends on a wrong one fails;
   - a numeric intermediate target is met when any number in the text equals it numerically ("1,200",
     "1200.0" and "1200" are equal; a minus sign counts only when it does not follow a digit or letter, so
     "5-3" holds 5 and 3, not -3);
   - a string intermediate target is met when the text contains it as a whole phrase after both are
     normalised (NFKC, case folded, runs of whitespace made one space), not inside a longer word.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from ropd.reward.answers import answer_text, answers_match, canonical_number, extract_final_answer

TARGET_MAX_CHARS = 32
MIN_STRING_CHARS = 3
PLACEHOLDERS = frozenset({"none", "n/a", "na", "null", "nil", "-", "--", "no target", "not applicable", "unknown", "tbd"})
SAFE_PUNCTUATION = frozenset(" .,-+/%$€£¥:'()")
MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2012": "-", "\ufe63": "-", "\uff0d": "-"})
# A number in running text: thousands groups, decimals, a fraction; the sign is taken only when nothing word-like precedes it.
NUMBER_IN_TEXT = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|\.\d+)(?!\d)")

Kind = Literal["final", "intermediate"]


@dataclass(frozen=True)
class GroundedTarget:
    """A target code may check: its text, whether it is the final result, and its number when it is one."""

    text: str
    kind: Kind
    number: str | None


def tidy(text: str) -> str:
    """NFKC, minus signs unified, whitespace runs made one space, stripped (case kept)."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(MINUS_SIGNS).split())


def normalise(text: str) -> str:
    """`tidy`, then case folded: the form strings are compared in."""
    return tidy(text).casefold()


def clean_target(raw: str | None) -> tuple[str | None, str | None]:
    """(the target, tidied, None) when usable under rule 1, else (None, why it was dropped: "absent", "too long", "unsafe")."""
    if raw is None or not raw.strip():
        return None, "absent"
    if len(raw) > TARGET_MAX_CHARS:
        return None, "too long"
    if not all(ch.isalnum() or ch in SAFE_PUNCTUATION for ch in unicodedata.normalize("NFKC", raw).translate(MINUS_SIGNS)):
        return None, "unsafe"
    text = tidy(raw)
    if not text or text.casefold() in PLACEHOLDERS:
        return None, "absent"
    return text, None


def numbers_in(text: str) -> list[str]:
    """Every number written in `text`, in order, as written (thousands commas kept)."""
    text = unicodedata.normalize("NFKC", text).translate(MINUS_SIGNS)
    return [sign + value for sign, value in NUMBER_IN_TEXT.findall(text)]


def occurs_in(target: str, text: str) -> bool:
    """Rule 3 for intermediate targets: a number anywhere in `text` equal to a numeric target, else the phrase as a whole."""
    if canonical_number(target) is not None:
        return any(answers_match(found, target) for found in numbers_in(text))
    phrase, body = normalise(target), normalise(text)
    pattern = r"(?<!\w)" + re.escape(phrase) + r"(?!\w)"  # the escaped literal phrase: the target is never a pattern itself
    return re.search(pattern, body) is not None


def ground_target(raw: str | None, teacher_answers: list[str], question: str = "") -> tuple[GroundedTarget | None, str | None]:
    """(the grounded target, None), or (None, why it was dropped) under rules 1 and 2."""
    text, dropped = clean_target(raw)
    if text is None:
        return None, dropped
    if not teacher_answers:
        return None, "ungrounded"
    number = canonical_number(text)
    need = len(teacher_answers)
    finals = [extract_final_answer(t) for t in teacher_answers]
    if 2 * sum(f is not None and answers_match(f, text) for f in finals) >= need:
        return GroundedTarget(text, "final", number), None
    if number is None and len(text) < MIN_STRING_CHARS:
        return None, "too short"
    if question and occurs_in(text, question):
        return None, "in question"
    if 2 * sum(occurs_in(text, answer_text(t)) for t in teacher_answers) >= need:
        return GroundedTarget(text, "intermediate", number), None
    return None, "ungrounded"


def meets_target(target: GroundedTarget, answer: str) -> bool:
    """Rule 3: whether an answer meets a grounded target."""
    if target.kind == "final":
        found = extract_final_answer(answer)
        return found is not None and answers_match(found, target.text)
    return occurs_in(target.text, answer_text(answer))
