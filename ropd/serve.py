"""`ropd serve`: an OpenAI-compatible chat-completions server for a local model.

It honours what ropd's teacher, rubricator and judge calls rely on: the model's chat template,
max_tokens, temperature (0 = greedy), top_p, n, seed, stop, usage, finish_reason, and
response_format (json_schema / json_object), enforced token by token with xgrammar and without
free whitespace, so even a small judge returns parseable JSON.

Throughput on a few CPU cores comes from batching: the n samples of a request share one prefill,
and requests that arrive while others decode join the running batch between two decoding steps
(each row keeps its own sampling settings, random generator and grammar matcher). A seed makes a
request reproducible when it runs alone; batched with others, last-bit differences can change samples.
On a CPU, dtype "int8" (int8 Linear weights) decodes faster than float32.

`local_server(alias)` runs one as a subprocess on 127.0.0.1 for the duration of a `with` block.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import xgrammar as xgr
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import DynamicCache

from ropd.config import ModelAlias
from ropd.models import ModelError, load_model, load_tokenizer, local_path

log = logging.getLogger("ropd.serve")


class ServeError(RuntimeError):
    """The local server could not start or stopped unexpectedly; the message carries its log tail."""


class APIError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# --- request types --------------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def as_template_input(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object with a 'schema'")
        return self


class ChatRequest(BaseModel):
    """The chat-completions fields this server honours; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    logprobs: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @model_validator(mode="after")
    def _supported(self) -> ChatRequest:
        if self.logprobs:
            raise ValueError("logprobs are not supported by this server")
        if self.frequency_penalty or self.presence_penalty:
            raise ValueError("frequency_penalty and presence_penalty are not supported by this server")
        return self

    @property
    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [s for s in stops if s]


# --- the generation engine ------------------------------------------------------------------------


@dataclass
class Completion:
    text: str
    tokens: int
    finish_reason: Literal["stop", "length"]


@dataclass
class Job:
    """One request: n samples of the same prompt with the same settings."""

    prompt_ids: list[int]
    n: int
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    grammar: xgr.CompiledGrammar | None
    generator: torch.Generator
    future: Future = field(default_factory=Future)
    outputs: list[Completion | None] = field(default_factory=list)
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.outputs = [None] * self.n


@dataclass
class Row:
    """One sample being decoded: a row of the running batch."""

    job: Job
    index: int
    position: int
    matcher: xgr.GrammarMatcher | None
    tokens: list[int] = field(default_factory=list)
    text: str | None = None
    finish_reason: Literal["stop", "length"] | None = None


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits with every token outside the smallest set holding `top_p` of the probability set to -inf.

    Looks for the nucleus among the top 256 tokens first and widens only when needed: a full sort
    of a 150k vocabulary costs far more than a decoding step of a small model on a CPU.
    """
    if top_p >= 1.0:
        return logits
    probs = logits.softmax(dim=-1)
    k = min(256, probs.shape[-1])
    while True:
        top = probs.topk(k, dim=-1).values
        if k == probs.shape[-1] or bool((top.sum(dim=-1) >= top_p).all()):
            break
        k = min(k * 8, probs.shape[-1])
    last = (top.cumsum(dim=-1) < top_p).sum(dim=-1, keepdim=True).clamp(max=k - 1)
    return logits.masked_fill(probs < top.gather(-1, last), float("-inf"))


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row by inverse-CDF sampling (much cheaper than torch.multinomial over a large vocabulary)."""
    cdf = top_p_filter(logits / temperature, top_p).softmax(dim=-1).cumsum(dim=-1)
    draw = torch.rand(cdf.shape[0], 1, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw, right=True).clamp(max=cdf.shape[-1] - 1)[:, 0]


def stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-turn tokens: the generation config's eos ids plus the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def control_char_tokens(info: xgr.TokenizerInfo, keep: set[int]) -> torch.Tensor:
    """Ids of tokens holding a raw control character, which JSON forbids inside strings.

    xgrammar's string rule admits them (only quote, backslash and line breaks are excluded), and
    with free whitespace off, JSON outside strings needs none either; stop tokens stay allowed.
    """
    special = set(info.special_token_ids) | keep
    return torch.tensor(
        [i for i, text in enumerate(info.decoded_vocab) if i not in special and any(b < 0x20 for b in text)], dtype=torch.long
    )


class Engine:
    """Decodes a running batch of rows on one worker thread; requests join it between steps.

    Rows of different lengths share one left-padded KV cache: each row keeps its own position ids,
    and an attention mask hides the padding. Finished rows leave the batch at once.
    """

    def __init__(self, model, tokenizer, *, max_batch_size: int = 16, batch_wait_s: float = 0.005):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.vocab_size = model.config.get_text_config().vocab_size
        self.real_vocab = min(len(tokenizer), self.vocab_size)
        self.stop_ids = stop_token_ids(model, tokenizer)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size, stop_token_ids=sorted(self.stop_ids))
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)
        self.control_tokens = control_char_tokens(info, self.stop_ids)
        self.context_length = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 4096
        self.incoming: queue.Queue[Job] = queue.Queue()
        self.waiting: deque[Job] = deque()
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.peak_rows = 0
        self.completed_requests = 0
        self.abandoned_requests = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="ropd-serve-engine", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def submit(self, job: Job) -> Future:
        self.incoming.put(job)
        return job.future

    # -- requests to jobs --

    def compile_grammar(self, response_format: ResponseFormat | None) -> xgr.CompiledGrammar | None:
        """The grammar a response format asks for: JSON with no free whitespace, or None for text."""
        if response_format is None or response_format.type == "text":
            return None
        schema = response_format.json_schema.schema_ if response_format.type == "json_schema" else {"type": "object"}
        try:
            return self.compiler.compile_json_schema(schema, any_whitespace=False)
        except Exception as exc:
            raise APIError(400, f"response_format.json_schema.schema cannot be used: {exc}", param="response_format") from exc

    def make_job(self, request: ChatRequest) -> Job:
        """Tokenize the chat, compile its grammar and fix its sampling settings (APIError on bad input)."""
        messages = [m.as_template_input() for m in request.messages]
        if not self.tokenizer.chat_template:
            raise APIError(400, "the served model has no chat template, so it cannot answer chat completions", param="messages")
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:
            raise APIError(400, f"the model's chat template rejects these messages: {exc}", param="messages") from exc
        prompt_ids = self.tokenizer(text, add_special_tokens=False).input_ids
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise APIError(
                400, f"the prompt has {len(prompt_ids)} tokens; this model's context holds {self.context_length}", param="messages"
            )
        asked = request.max_completion_tokens or request.max_tokens
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        return Job(
            prompt_ids=prompt_ids,
            n=request.n,
            max_new_tokens=min(asked or room, room),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_strings,
            grammar=self.compile_grammar(request.response_format),
            generator=torch.Generator().manual_seed(seed % (1 << 63)),
        )

    # -- the worker loop --

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self.stopping.is_set():
                if not self.rows and not self.waiting:
                    try:
                        self.waiting.append(self.incoming.get(timeout=0.1))
                    except queue.Empty:
                        continue
                    time.sleep(self.batch_wait_s)
                try:
                    self._admit()
                    if self.rows:
                        self._step()
                except Exception as exc:
                    log.exception("generation failed")
                    self._fail_all(exc)

    def _fail_all(self, exc: Exception) -> None:
        for job in {id(r.job): r.job for r in self.rows}.values():
            if not job.future.done():
                job.future.set_exception(exc)
        self.rows, self.cache, self.mask, self.logits = [], None, None, None

    def _admit(self) -> None:
        """Move waiting requests into the batch while it has room (a request larger than the batch runs alone)."""
        while True:
            try:
                self.waiting.append(self.incoming.get_nowait())
            except queue.Empty:
                break
        while self.waiting and (not self.rows or len(self.rows) + self.waiting[0].n <= self.max_batch_size):
            job = self.waiting.popleft()
            if job.abandoned:
                self.abandoned_requests += 1
            elif job.future.set_running_or_notify_cancel():
                self._prefill(job)

    def _prefill(self, job: Job) -> None:
        """Run the prompt once and add its n rows, sharing the prompt's keys and values."""
        try:
            out = self.model(input_ids=torch.tensor([job.prompt_ids]), use_cache=True, logits_to_keep=1)
        except Exception as exc:
            job.future.set_exception(exc)
            return
        layers = [(k.expand(job.n, -1, -1, -1), v.expand(job.n, -1, -1, -1)) for k, v, *_ in out.past_key_values]
        rows = [Row(job, i, len(job.prompt_ids), xgr.GrammarMatcher(job.grammar) if job.grammar else None) for i in range(job.n)]
        mask = torch.ones(job.n, len(job.prompt_ids), dtype=torch.long)
        self._merge(layers, mask, out.logits[:, -1].float().expand(job.n, -1), rows)

    def _merge(self, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, logits: torch.Tensor, rows: list[Row]) -> None:
        """Append rows to the batch, left-padding whichever cache is shorter."""
        if self.rows:
            old = [(k, v) for k, v, *_ in self.cache]
            length = max(self.mask.shape[1], mask.shape[1])
            layers = [
                (torch.cat([_left_pad(k0, length), _left_pad(k1, length)]), torch.cat([_left_pad(v0, length), _left_pad(v1, length)]))
                for (k0, v0), (k1, v1) in zip(old, layers, strict=True)
            ]
            mask = torch.cat([F.pad(self.mask, (length - self.mask.shape[1], 0)), F.pad(mask, (length - mask.shape[1], 0))])
            logits = torch.cat([self.logits, logits])
            rows = self.rows + rows
        self.cache = DynamicCache(layers)
        self.mask, self.logits, self.rows = mask, logits.clone(memory_format=torch.contiguous_format), rows
        self.peak_rows = max(self.peak_rows, len(rows))

    def _step(self) -> None:
        """Sample one token for every row, retire finished rows, then run the model on the rest."""
        tokens = self._sample()
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            self._advance(row, token)
        keep = [i for i, row in enumerate(self.rows) if row.finish_reason is None and not row.job.abandoned]
        self.abandoned_requests += len({id(row.job) for row in self.rows if row.job.abandoned})
        for row in self.rows:
            if row.finish_reason is not None:
                self._finish(row)
        if len(keep) < len(self.rows):
            self._select(keep)
            tokens = tokens[keep]
        if not self.rows:
            self.cache, self.mask, self.logits = None, None, None
            return
        self.mask = F.pad(self.mask, (0, 1), value=1)
        positions = torch.tensor([[row.position] for row in self.rows])
        out = self.model(
            input_ids=tokens[:, None], attention_mask=self.mask, position_ids=positions, past_key_values=self.cache, use_cache=True
        )
        self.logits = out.logits[:, -1].float()
        for row in self.rows:
            row.position += 1

    def _sample(self) -> torch.Tensor:
        """Next token per row: grammar mask, then greedy or temperature/top-p sampling with the request's generator."""
        logits = self.logits
        if self.real_vocab < self.vocab_size:
            logits[:, self.real_vocab :] = float("-inf")
        constrained = [i for i, row in enumerate(self.rows) if row.matcher is not None]
        if constrained:
            bitmask = xgr.allocate_token_bitmask(len(self.rows), self.vocab_size)
            for i in constrained:
                self.rows[i].matcher.fill_next_token_bitmask(bitmask, i)
            xgr.apply_token_bitmask_inplace(logits, bitmask, indices=constrained)
            logits[torch.tensor(constrained)[:, None], self.control_tokens] = float("-inf")
        tokens = logits.argmax(dim=-1)
        for job, indices in self._sampled_groups():
            tokens[indices] = sample_tokens(logits[indices], job.temperature, job.top_p, job.generator)
        return tokens

    def _sampled_groups(self) -> list[tuple[Job, list[int]]]:
        groups: dict[int, tuple[Job, list[int]]] = {}
        for i, row in enumerate(self.rows):
            if row.job.temperature > 0:
                groups.setdefault(id(row.job), (row.job, []))[1].append(i)
        return list(groups.values())

    def _advance(self, row: Row, token: int) -> None:
        """Record a sampled token and decide whether the row is done."""
        row.tokens.append(token)
        if row.matcher is not None and not row.matcher.accept_token(token):
            raise RuntimeError(f"the grammar matcher rejected token {token}, which its own mask allowed")
        if token in self.stop_ids:
            row.finish_reason = "stop"
            return
        if row.job.stop:
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = min((text.find(s) for s in row.job.stop if s in text), default=-1)
            if cut >= 0:
                row.text, row.finish_reason = text[:cut], "stop"
                return
        if len(row.tokens) >= row.job.max_new_tokens:
            row.finish_reason = "length"

    def _finish(self, row: Row) -> None:
        job = row.job
        if row.text is None:
            content = row.tokens[:-1] if row.tokens[-1] in self.stop_ids else row.tokens
            row.text = self.tokenizer.decode(content, skip_special_tokens=True)
        job.outputs[row.index] = Completion(row.text, len(row.tokens), row.finish_reason)
        if all(o is not None for o in job.outputs) and not job.future.done():
            job.future.set_result(job.outputs)
            self.completed_requests += 1

    def _select(self, keep: list[int]) -> None:
        """Keep only the given rows, and drop cache columns that are padding for every remaining row."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            return
        index = torch.tensor(keep)
        mask = self.mask[index]
        start = int(mask.any(dim=0).long().argmax())
        self.cache = DynamicCache([(k[index, :, start:], v[index, :, start:]) for k, v, *_ in self.cache])
        self.mask, self.logits = mask[:, start:], self.logits[index]


def _left_pad(states: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(states, (0, 0, length - states.shape[-2], 0))


# --- the HTTP app ---------------------------------------------------------------------------------


class Int8Linear(torch.nn.Module):
    """A Linear layer with int8 weights (one scale per output channel).

    Decoding (fewer than PREFILL_ROWS rows) multiplies the int8 weights in bfloat16: memory-bound, so
    reading 1 byte per weight is what counts, and each row's result depends on that row alone, so
    batching does not change outputs. A prompt's prefill multiplies the dequantized weights in float32,
    which 2 AVX2 cores compute faster. The result comes back in the input's dtype.
    """

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.register_buffer("weight", (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] >= PREFILL_ROWS:  # compute-bound: float32 GEMM beats bfloat16 on AVX2, dequantizing costs little
            weight = self.weight.to(torch.float32).mul_(self.scales.to(torch.float32)[:, None])
            out = F.linear(flat.to(torch.float32), weight)
        else:  # memory-bound decoding: read int8 weights
            out = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight, self.scales)
        out = out.reshape(*x.shape[:-1], -1)
        return (out if self.bias is None else out + self.bias).to(x.dtype)


PREFILL_ROWS = 64  # an Int8Linear given at least this many token rows (a prompt's prefill) multiplies in float32


def quantize_linears(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every nn.Linear below `module` with an Int8Linear, in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantize_linears(child)
    return module


def load_served_model(model: str, dtype: str = "auto", models: dict[str, ModelAlias] | None = None):
    """Load weights for inference; dtype "int8" stores Linear weights as int8, the rest in float32 (CPU only).

    On a few AVX2 cores decoding is memory-bound, so int8 weights decode faster than float32
    (and bfloat16, which such CPUs compute slowly), with outputs close to float32's.
    """
    if dtype != "int8":
        return load_model(model, dtype, models).eval()
    if torch.cuda.is_available():
        raise ModelError("dtype int8 is CPU-only; use bfloat16 on a GPU")
    # Loaded in bfloat16, quantized, then the rest made float32. For checkpoints stored in bfloat16 (the
    # packaged ones) these are the weights a float32 load would give, at less peak memory (1.5B server:
    # 7.5 GB, not 10.9 GB).
    quantized = quantize_linears(load_model(model, "bfloat16", models).eval())
    for module in quantized.modules():
        if not isinstance(module, Int8Linear):
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None and tensor.is_floating_point():
                        tensor.data = tensor.data.float()
    return quantized


def create_app(
    model: str,
    *,
    served_name: str | None = None,
    dtype: str = "auto",
    max_batch_size: int = 16,
    batch_wait_ms: float = 5.0,
    models: dict[str, ModelAlias] | None = None,
) -> FastAPI:
    """Load `model` (alias, folder or Hub id) and return the app serving it as `served_name` (default: `model`)."""
    name = served_name or model
    started, created = time.monotonic(), int(time.time())
    engine = Engine(
        load_served_model(model, dtype, models),
        load_tokenizer(model, models),
        max_batch_size=max_batch_size,
        batch_wait_s=batch_wait_ms / 1000,
    )
    log.info(
        "loaded %s as '%s' in %.1f s (dtype %s: %s, %d torch threads)",
        model,
        name,
        time.monotonic() - started,
        dtype,
        engine.model.dtype,
        torch.get_num_threads(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="ropd serve", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return APIError(400, f"invalid request: {problems}").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": name,
            "pid": os.getpid(),
            "active_rows": len(engine.rows),
            "peak_batch_rows": engine.peak_rows,
            "completed_requests": engine.completed_requests,
            "abandoned_requests": engine.abandoned_requests,
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "ropd"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, connection: Request) -> dict[str, Any]:
        if request.model != name:
            raise APIError(
                404, f"The model `{request.model}` does not exist; this server serves `{name}`", param="model", code="model_not_found"
            )
        if request.stream:
            raise APIError(400, "stream=true is not supported by this server; send stream=false", param="stream")
        job = await run_in_threadpool(engine.make_job, request)
        outputs = await _outputs_unless_disconnected(job, engine.submit(job), connection)
        completion_tokens = sum(o.tokens for o in outputs)
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": o.text}, "finish_reason": o.finish_reason, "logprobs": None}
                for i, o in enumerate(outputs)
            ],
            "usage": {
                "prompt_tokens": len(job.prompt_ids),
                "completion_tokens": completion_tokens,
                "total_tokens": len(job.prompt_ids) + completion_tokens,
            },
        }

    return app


async def _outputs_unless_disconnected(job: Job, future: Future, connection: Request) -> list[Completion]:
    """Wait for a job's outputs; if the client goes away (or the server stops), the engine drops the job."""
    outputs = asyncio.wrap_future(future)
    try:
        while not (await asyncio.wait({outputs}, timeout=1.0))[0]:
            if await connection.is_disconnected():
                raise APIError(499, "the client closed the connection before the completion was ready")
        return outputs.result()
    except (APIError, asyncio.CancelledError):
        job.abandoned = True
        raise
    except Exception as exc:
        raise APIError(500, f"generation failed: {exc}") from exc


def run_server(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    served_name: str | None = None,
    dtype: str = "auto",
    max_batch_size: int = 16,
    threads: int | None = None,
    exit_on_stdin_eof: bool = False,
    models: dict[str, ModelAlias] | None = None,
) -> None:
    """Serve `model` in the foreground until Ctrl-C (or, with exit_on_stdin_eof, until stdin closes)."""
    import uvicorn

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if threads:
        torch.set_num_threads(threads)
    app = create_app(model, served_name=served_name, dtype=dtype, max_batch_size=max_batch_size, models=models)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5))
    if exit_on_stdin_eof:
        threading.Thread(target=_exit_when_stdin_closes, args=(server,), daemon=True).start()
    server.run()


def _exit_when_stdin_closes(server) -> None:
    """Exit when the parent that started us goes away (its end of our stdin closes): nobody awaits our answers."""
    while sys.stdin.buffer.read(1 << 16):
        pass
    log.info("stdin closed: the parent process is gone; exiting")
    server.should_exit = True
    time.sleep(8)
    os._exit(0)


# --- a server as a subprocess ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(
    model: str,
    *,
    models: dict[str, ModelAlias] | None = None,
    port: int | None = None,
    startup_timeout: float = 300,
    log_path: Path | None = None,
    dtype: str = "auto",
    threads: int | None = None,
) -> Iterator[str]:
    """Serve a local model on 127.0.0.1 in a subprocess; yield its base URL ("http://127.0.0.1:PORT/v1").

    Requests name the model by the string given here. The process is stopped on exit, also on
    errors and Ctrl-C; its log goes to `log_path` (else a temporary file).
    """
    path = local_path(model, models)
    port = port or free_port()
    log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="ropd-serve-", suffix=".log")[1])
    command = [sys.executable, "-m", "ropd.cli", "serve", path, "--served-name", model, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", dtype, "--exit-on-stdin-eof"] + (["--threads", str(threads)] if threads else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")]))}
    log.info("starting a server for %s on port %d (log: %s)", model, port, log_path)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_until_healthy(process, f"http://127.0.0.1:{port}", startup_timeout, log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(process)


def _wait_until_healthy(process: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise ServeError(
                f"the model server exited with code {process.returncode} while starting; its log ({log_path}) ends:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    log.info("model server ready at %s after %.1f s", url, time.monotonic() - started)
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise ServeError(f"the model server did not answer {url}/health within {timeout:.0f} s; its log ({log_path}) ends:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen) -> None:
    """Ask the server to stop, then kill it if it has not within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdin:
        process.stdin.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
