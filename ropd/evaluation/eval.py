"""Evaluation: generate completions for a list of prompts and measure a model's accuracy (avg@n, pass@k).

  evaluate / evaluate_path   generate for a list of PromptRows (transformers or vLLM) and score them
  score                      check every sample against its prompt's reference (`ropd.reward.answers.is_correct`)
  pass_at_k                  the unbiased pass@k estimate

Reading and checking answers lives in `ropd.reward.answers`, which the reward path shares.
"""

from __future__ import annotations

import importlib.util
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from ropd.reward.answers import extract_final_answer, is_correct
from ropd.types import PromptRow

Backend = Literal["auto", "transformers", "vllm"]


class EvalError(ValueError):
    """Evaluation settings that cannot be used (k above n, a missing backend, no prompts)."""


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
    from ropd.endpoints.models import load_model, load_tokenizer, local_path

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
