"""A served white-box teacher: the log-probabilities it gives the tokens of sequences it did not write.

`--method opd|sod` with `teacher.base_url` scores the student's rollouts on a server instead of a teacher loaded
beside the student: one legacy completions request per batch, each prompt given as token ids (prompt + the
student's completion), `max_tokens: 1` and vLLM's `prompt_logprobs: 0`, which returns, at every position, the
log-probability of the token that is there. vLLM's OpenAI-compatible server (`vllm serve MODEL`) and TRL's
(`trl vllm-serve`) answer it; llama.cpp's llama-server does not (it returns no prompt log-probabilities), and a
server that does not gets `TeacherLogprobsError` saying so, at the start of the run (`check`).

A server returns no full distribution, so the signal is the sampled token's: s_t = log p_T(y_t) - log p_S(y_t),
the sampled-token estimate of the reverse KL that server-based on-policy distillation uses (see `ropd.training.opd`). Those
values are at temperature 1 and cannot be rescaled without the full distribution, so a run sampling at another
temperature is refused (`check_temperature`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from ropd.config import EndpointConfig, redact_url
from ropd.endpoints.transport import PLACEHOLDER_KEY


class TeacherLogprobsError(RuntimeError):
    """A teacher server that cannot give the log-probabilities of given tokens; the message says what to run instead."""


def check_temperature(temperature: float) -> None:
    """Refuse a sampling temperature other than 1 with a served teacher: the student's and a loaded teacher's
    log-probabilities are those of logits / temperature, and a server returns the sampled token's log-probability at
    temperature 1 without the whole distribution it would take to rescale it, so the two would not compare."""
    if temperature != 1.0:
        raise TeacherLogprobsError(
            f"training.temperature is {temperature}, but a served teacher's log-probabilities are at temperature 1 and cannot "
            f"be rescaled (the server returns no full distribution), while the student's are taken at {temperature}: the "
            f"teacher signal would be off. Set training.temperature to 1 (--temperature 1), or drop --teacher-base-url to "
            f"load the teacher beside the student, whose logits are divided by the temperature like the student's."
        )


class ServedTeacherLogprobs:
    """Per-token log-probabilities of existing sequences from a teacher behind an OpenAI-compatible server."""

    def __init__(self, endpoint: EndpointConfig, *, chunk_size: int = 16):
        if not endpoint.base_url:
            raise ValueError("a served teacher needs a base URL")
        self.endpoint = endpoint
        self.model = endpoint.model
        self.chunk_size = chunk_size
        self.where = redact_url(endpoint.base_url)
        self._client = openai.OpenAI(
            base_url=endpoint.base_url,
            api_key=os.environ.get(endpoint.api_key_env) or PLACEHOLDER_KEY,
            timeout=endpoint.timeout,
            max_retries=endpoint.max_retries,
        )

    def check(self) -> None:
        """One small request, so a server without prompt log-probabilities stops the run before any training."""
        self.sampled_logprobs([[1, 2, 3]], [1])

    def sampled_logprobs(self, sequences: list[list[int]], prompt_lengths: list[int]) -> list[list[float]]:
        """For each sequence, the teacher's log-probability of every token after its first `prompt_length` tokens."""
        chunks = [range(start, min(start + self.chunk_size, len(sequences))) for start in range(0, len(sequences), self.chunk_size)]
        workers = max(1, min(self.endpoint.max_concurrency, len(chunks)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = pool.map(lambda rows: self._score([sequences[i] for i in rows], [prompt_lengths[i] for i in rows]), chunks)
            return [values for part in parts for values in part]

    def _score(self, sequences: list[list[int]], prompt_lengths: list[int]) -> list[list[float]]:
        try:
            response = self._client.completions.create(
                model=self.model, prompt=sequences, max_tokens=1, temperature=1.0, extra_body={"prompt_logprobs": 0}
            )
        except openai.APIStatusError as exc:
            raise TeacherLogprobsError(self._refused(f"HTTP {exc.status_code}: {exc.message}")) from None
        except openai.OpenAIError as exc:
            raise TeacherLogprobsError(f"teacher server at {self.where} failed: {type(exc).__name__}: {exc}") from None
        choices = sorted(response.choices, key=lambda choice: choice.index)
        if len(choices) != len(sequences):
            raise TeacherLogprobsError(self._refused(f"{len(choices)} choices for {len(sequences)} sequences"))
        return [self._values(c, s, p) for c, s, p in zip(choices, sequences, prompt_lengths, strict=True)]

    def _values(self, choice: Any, sequence: list[int], prompt_length: int) -> list[float]:
        per_position = (choice.model_extra or {}).get("prompt_logprobs")
        if not isinstance(per_position, list) or len(per_position) < len(sequence):
            raise TeacherLogprobsError(self._refused("its reply holds no prompt_logprobs"))
        values = []
        for position in range(prompt_length, len(sequence)):
            entry = (per_position[position] or {}).get(str(sequence[position]))
            logprob = entry.get("logprob") if isinstance(entry, dict) else None
            if not isinstance(logprob, int | float):
                raise TeacherLogprobsError(self._refused(f"no log-probability for token {sequence[position]} at position {position}"))
            values.append(-math.inf if math.isnan(logprob) else float(logprob))
        return values

    def _refused(self, detail: str) -> str:
        return (
            f"the teacher server at {self.where} (model '{self.model}') gave no log-probabilities for the student's tokens "
            f"({detail}). --method opd/sod with a served teacher needs a server that scores given tokens (vLLM's "
            f"prompt_logprobs: `vllm serve MODEL`, or `trl vllm-serve`); llama.cpp's llama-server cannot. Or drop "
            f"--teacher-base-url to load the teacher beside the student, or use --method ropd, which needs only text."
        )
