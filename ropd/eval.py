"""Evaluation: pull the final answer out of a completion, check it, and measure a model's accuracy.

Three layers, each usable alone:
  extract_final_answer / is_correct   one completion against one reference answer
  outcome_reward                      a TRL GRPOTrainer reward function (1.0 correct, 0.0 wrong)
  evaluate / evaluate_path            generate for a list of PromptRows and report avg@n and pass@k

Checking picks the strictest scorer that applies: reasoning-gym's own scorer when the row names a
reasoning-gym task, a letter match for multiple-choice references, numeric comparison, math-verify
for mathematical expressions, and a normalised exact match for everything else.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field

from ropd.types import PromptRow

log = logging.getLogger(__name__)

Backend = Literal["auto", "transformers", "vllm"]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MAX_CHECKED_CHARS = 500  # longer extracted answers skip the symbolic checker (bounded sympy time)


class EvalError(ValueError):
    """Evaluation settings that cannot be used (k above n, a missing backend, no prompts)."""


# --- extraction -----------------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_PHRASE = re.compile(r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:|=)\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?/\d+(?:\.\d+)?|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_CHOICE_REFERENCE = re.compile(r"\(?([A-J])\)?\.?")
_CHOICE_IN_ANSWER = re.compile(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])")
_CHOICE_AT_END = re.compile(r"(?<![A-Za-z'])([A-J])[.!]?\s*$")
_CHOICE_LINE = re.compile(r"\(?([A-J])[).:](?:\s.*)?")


def final_text(text: str) -> str | None:
    """The part of a completion after its reasoning: text after the last `</think>`.

    None when a `<think>` block was opened and never closed (the model never reached an answer).
    """
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        return None
    return text


def extract_final_answer(text: Any) -> str | None:
    """The final answer a completion commits to, as written, or None when it gives none.

    Looks after the last `</think>` only, and takes the first of: the last <answer>...</answer>,
    the last \\boxed{...}, the last "#### X", the last "answer is X" / "Answer: X", the whole text
    when it is one line without other numbers, and finally the last number.
    """
    if not isinstance(text, str):
        return None
    body = final_text(text)
    if body is None or not body.strip():
        return None
    found = _marked_answer(body) or _short_line(body) or _last_number(body)
    return found or None


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


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string, a chat message, or a list of messages (assistant turns joined)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, list | tuple):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        return "\n".join(_content_text(m.get("content")) for m in (assistant or messages))
    return str(completion)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return "" if content is None else str(content)


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
    answer = extract_final_answer(text)
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


# --- metrics --------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


class PromptRecord(BaseModel):
    """The outcome for one prompt: how many samples were correct, and the first sample."""

    id: str
    reference: str | None
    correct: int = Field(description="Samples whose final answer was correct.")
    samples: int
    extracted: str | None = Field(description="Final answer extracted from the first sample.")
    completion: str = Field(description="The first sample's text.")


class EvalResult(BaseModel):
    """Accuracy of one model on a list of prompts."""

    model: str
    dataset: str | None = None
    backend: Literal["transformers", "vllm"]
    num_prompts: int
    n_samples: int
    k: int
    accuracy: float = Field(description="avg@n: mean correctness over all samples of all prompts.")
    pass_at_k: float = Field(description="Mean unbiased pass@k over prompts.")
    answered: float = Field(description="Fraction of samples with an extractable final answer.")
    truncated: float = Field(description="Fraction of samples cut off at max_new_tokens.")
    mean_completion_tokens: float
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    seconds: float
    records: list[PromptRecord]


@dataclass
class Sample:
    text: str
    num_tokens: int
    truncated: bool


def score(
    prompts: list[PromptRow], samples: list[list[Sample]], *, k: int, model: str, backend: str, seconds: float, settings: dict[str, Any]
) -> EvalResult:
    """Check every sample against its prompt's reference and summarise."""
    records, flat, answered = [], [], 0
    for row, row_samples in zip(prompts, samples, strict=True):
        extra = row.model_extra or {}
        verdicts = [is_correct(s.text, row.answer, extra.get("task"), extra.get("metadata")) for s in row_samples]
        extracted = [extract_final_answer(s.text) for s in row_samples]
        answered += sum(e is not None for e in extracted)
        flat.extend(row_samples)
        records.append(
            PromptRecord(
                id=row.id,
                reference=row.answer,
                correct=sum(verdicts),
                samples=len(row_samples),
                extracted=extracted[0],
                completion=row_samples[0].text,
            )
        )
    total = len(flat)
    return EvalResult(
        model=model,
        backend=backend,
        num_prompts=len(prompts),
        k=k,
        accuracy=sum(r.correct for r in records) / total,
        pass_at_k=sum(pass_at_k(r.samples, r.correct, k) for r in records) / len(records),
        answered=answered / total,
        truncated=sum(s.truncated for s in flat) / total,
        mean_completion_tokens=sum(s.num_tokens for s in flat) / total,
        seconds=round(seconds, 3),
        records=records,
        **settings,
    )


# --- generation -----------------------------------------------------------------------------------


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt text the model sees: its chat template with the generation prompt, or plain text without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def check_settings(
    prompts: list[PromptRow],
    *,
    n_samples: int = 1,
    k: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    **_: Any,
) -> int:
    """Raise EvalError for settings that cannot work; return k (n_samples when unset)."""
    if not prompts:
        raise EvalError("no prompts to evaluate")
    if n_samples < 1 or batch_size < 1:
        raise EvalError(f"n_samples and batch_size must be >= 1 (got {n_samples}, {batch_size})")
    k = n_samples if k is None else k
    if not 1 <= k <= n_samples:
        raise EvalError(f"k must be between 1 and n_samples={n_samples} (got {k})")
    if temperature < 0 or not 0 < top_p <= 1:
        raise EvalError(f"temperature must be >= 0 and top_p in (0, 1] (got {temperature}, {top_p})")
    return k


def evaluate(
    model,
    tokenizer,
    prompts: list[PromptRow],
    *,
    n_samples: int = 1,
    k: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    model_name: str | None = None,
    dataset: str | None = None,
) -> EvalResult:
    """Generate `n_samples` completions per prompt with an in-memory transformers model and score them.

    k defaults to n_samples; `model_name` and `dataset` only label the result.

    Greedy when temperature == 0 (then one generation serves all n samples). The model's training
    mode, the tokenizer's padding side and the global RNG state are restored afterwards, so this is
    safe to call between training steps.
    """
    k = check_settings(prompts, n_samples=n_samples, k=k, temperature=temperature, top_p=top_p, batch_size=batch_size)
    start = time.perf_counter()
    samples = generate_transformers(
        model,
        tokenizer,
        prompts,
        n_samples=n_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    name = model_name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    settings = {
        "dataset": dataset,
        "n_samples": n_samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    return score(prompts, samples, k=k, model=name, backend="transformers", seconds=time.perf_counter() - start, settings=settings)


def evaluate_path(
    model_name_or_path: str,
    prompts: list[PromptRow],
    *,
    backend: Backend = "auto",
    dtype: str = "auto",
    dataset: str | None = None,
    **kw: Any,
) -> EvalResult:
    """Load a model by alias, path or Hub id and evaluate it; vLLM when installed with a GPU (backend="auto")."""
    from ropd.models import load_model, load_tokenizer, local_path

    kw["k"] = check_settings(prompts, **kw)
    if _use_vllm(backend):
        path, tokenizer = local_path(model_name_or_path), load_tokenizer(model_name_or_path)
        return _evaluate_vllm(path, tokenizer, prompts, name=model_name_or_path, dataset=dataset, dtype=dtype, **kw)
    model = load_model(model_name_or_path, dtype=dtype)
    tokenizer = load_tokenizer(model_name_or_path)
    if _cuda_available():
        model.to("cuda")
    return evaluate(model, tokenizer, prompts, model_name=model_name_or_path, dataset=dataset, **kw)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _use_vllm(backend: Backend) -> bool:
    available = importlib.util.find_spec("vllm") is not None and _cuda_available()
    if backend == "vllm" and not available:
        raise EvalError("backend 'vllm' needs the vllm package and a CUDA GPU")
    return backend == "vllm" or (backend == "auto" and available)


@contextmanager
def _generation_mode(model, tokenizer):
    """Eval mode and left padding for the duration; restores training mode, padding side and pad token."""
    was_training, side, pad = model.training, tokenizer.padding_side, tokenizer.pad_token
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def _progress_bar(enabled: bool, total: int, description: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if not enabled:
        return nullcontext(None)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=False)
    bar.add_task(description, total=total)
    return bar


def generate_transformers(
    model,
    tokenizer,
    prompts: list[PromptRow],
    *,
    n_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    progress: bool,
) -> list[list[Sample]]:
    """Batched generation (left padding, chat template, length-sorted batches); returns n samples per prompt."""
    import torch

    greedy = temperature == 0
    runs = 1 if greedy else n_samples
    texts = [render_prompt(tokenizer, [m.model_dump() for m in p.prompt]) for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    jobs = sorted(((i, r) for i in range(len(prompts)) for r in range(runs)), key=lambda job: -lengths[job[0]])
    config = _generation_config(model, tokenizer, max_new_tokens, temperature, top_p)
    stop_ids = _stop_ids(config)
    device = next(model.parameters()).device
    results: dict[tuple[int, int], Sample] = {}
    devices = [device.index or 0] if device.type == "cuda" else []
    bar_context = _progress_bar(progress, len(jobs), f"generating ({len(prompts)} prompts)")
    with _generation_mode(model, tokenizer), torch.random.fork_rng(devices=devices), torch.inference_mode(), bar_context as bar:
        torch.manual_seed(seed)
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            encoded = tokenizer([texts[i] for i, _ in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            output = model.generate(**encoded, generation_config=config)
            generated = output[:, encoded["input_ids"].shape[1] :].tolist()
            for job, ids in zip(batch, generated, strict=True):
                results[job] = _to_sample(tokenizer, ids, stop_ids, max_new_tokens)
            if bar is not None:
                bar.advance(bar.task_ids[0], len(batch))
    return [[results[(i, 0 if greedy else r)] for r in range(n_samples)] for i in range(len(prompts))]


def _generation_config(model, tokenizer, max_new_tokens: int, temperature: float, top_p: float):
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    eos = base.eos_token_id if base is not None and base.eos_token_id is not None else tokenizer.eos_token_id
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else {"do_sample": False}
    return GenerationConfig(
        max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, use_cache=True, **sampling
    )


def _stop_ids(config) -> set[int]:
    eos = config.eos_token_id
    return set(eos) if isinstance(eos, list | tuple) else {eos}


def _to_sample(tokenizer, ids: list[int], stop_ids: set[int], max_new_tokens: int) -> Sample:
    stop = next((i for i, token in enumerate(ids) if token in stop_ids), None)
    kept = ids if stop is None else ids[: stop + 1]
    return Sample(
        text=tokenizer.decode(kept, skip_special_tokens=True), num_tokens=len(kept), truncated=stop is None and len(ids) >= max_new_tokens
    )


def _evaluate_vllm(
    path: str,
    tokenizer,
    prompts: list[PromptRow],
    *,
    k: int,
    name: str,
    dataset: str | None,
    dtype: str,
    n_samples: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    **_: Any,
) -> EvalResult:
    """Generate with vLLM's offline engine (one request per prompt, n samples each) and score."""
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=path, seed=seed, dtype=dtype)
    runs = 1 if temperature == 0 else n_samples
    params = SamplingParams(n=runs, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    inputs = [
        {"prompt_token_ids": tokenizer(render_prompt(tokenizer, [m.model_dump() for m in p.prompt]), add_special_tokens=False)["input_ids"]}
        for p in prompts
    ]
    outputs = llm.generate(inputs, params, use_tqdm=progress)
    samples = [
        [Sample(text=o.text, num_tokens=len(o.token_ids), truncated=o.finish_reason == "length") for o in out.outputs] for out in outputs
    ]
    samples = [row * n_samples if runs == 1 else row for row in samples]
    settings = {
        "dataset": dataset,
        "n_samples": n_samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    return score(prompts, samples, k=k, model=name, backend="vllm", seconds=time.perf_counter() - start, settings=settings)
