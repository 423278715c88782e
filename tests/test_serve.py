"""`ropd serve` through the real openai client over HTTP on 127.0.0.1, with real (tiny or packaged) models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

from ropd.models import load_tokenizer
from ropd.serve import PREFILL_ROWS, Int8Linear, ServeError, load_served_model, local_server
from ropd.types import JudgeOutput, Rubric

pytestmark = pytest.mark.timeout(120)

QUESTION = [{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in all?"}]


class BoundedCriterion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=6)
    category: str = Field(max_length=12)
    text: str = Field(min_length=1, max_length=40)
    points: int = Field(ge=1, le=5)


class BoundedRubric(BaseModel):
    """The `Rubric` contract with bounds, as a rubricator call sends it."""

    model_config = ConfigDict(extra="forbid")
    criteria: list[BoundedCriterion] = Field(min_length=1, max_length=3)


class BoundedVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: int = Field(ge=1, le=3)
    final_answer: str = Field(max_length=24)
    met: list[bool] = Field(min_length=3, max_length=3)


class BoundedVerdicts(BaseModel):
    """The verdict shape a judge call asks for: evidence before the booleans."""

    model_config = ConfigDict(extra="forbid")
    verdicts: list[BoundedVerdict] = Field(min_length=3, max_length=3)


def json_schema_format(model: type[BaseModel]) -> dict:
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}


def assert_no_free_whitespace(content: str) -> None:
    """Outside string values, only the single space after ',' and ':' may appear."""
    skeleton = re.sub(r'"(?:[^"\\]|\\.)*"', '""', content).replace(", ", ",").replace(": ", ":")
    assert not re.search(r"\s", skeleton), content


def process_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def health(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory):
    with local_server("tiny-random", log_path=tmp_path_factory.mktemp("serve") / "tiny.log", threads=1) as url:
        yield url


@pytest.fixture
def client(tiny_url):
    return openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0, timeout=60)


def test_lists_the_served_alias(client, tiny_url):
    assert [m.id for m in client.models.list()] == ["tiny-random"]
    assert health(tiny_url)["model"] == "tiny-random"


def test_json_schema_output_validates_even_from_random_weights(client):
    for schema_model, contract in ((BoundedRubric, Rubric), (BoundedVerdicts, JudgeOutput)):
        response = client.chat.completions.create(
            model="tiny-random",
            messages=QUESTION,
            response_format=json_schema_format(schema_model),
            n=4,
            temperature=1.0,
            seed=11,
            max_tokens=400,
        )
        assert len(response.choices) == 4
        for choice in response.choices:
            assert choice.finish_reason == "stop", choice.message.content
            schema_model.model_validate_json(choice.message.content)
            contract.model_validate_json(choice.message.content)
            assert_no_free_whitespace(choice.message.content)


def test_n_choices_and_usage_counts(client):
    tokenizer = load_tokenizer("tiny-random")
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    response = client.chat.completions.create(model="tiny-random", messages=QUESTION, n=3, max_tokens=5, temperature=1.0, seed=1)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.finish_reason for c in response.choices] == ["length"] * 3
    assert response.usage.prompt_tokens == prompt_tokens
    assert response.usage.completion_tokens == 15
    assert response.usage.total_tokens == prompt_tokens + 15
    assert len({c.message.content for c in response.choices}) > 1, "n samples should differ at temperature 1"


def test_seed_makes_sampling_reproducible(client):
    def sample(seed: int) -> list[str]:
        response = client.chat.completions.create(model="tiny-random", messages=QUESTION, n=2, max_tokens=12, temperature=1.0, seed=seed)
        return [c.message.content for c in response.choices]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_greedy_and_stop_strings(client):
    greedy = client.chat.completions.create(model="tiny-random", messages=QUESTION, n=2, max_tokens=12, temperature=0)
    first, second = (c.message.content for c in greedy.choices)
    assert first == second
    stop = first[3:6]
    cut = client.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == first[: first.index(stop)]


def test_concurrent_requests_share_batches_and_match_solo_results(client, tiny_url):
    prompts = [[{"role": "user", "content": "word " * length}] for length in (3, 40, 11, 25)]

    def ask(messages: list[dict]) -> str:
        response = client.chat.completions.create(model="tiny-random", messages=messages, max_tokens=48, temperature=1.0, seed=5)
        return response.choices[0].message.content

    solo = [ask(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    assert together == solo
    assert health(tiny_url)["peak_batch_rows"] >= 2


def test_a_client_that_gives_up_frees_the_batch(tiny_url):
    impatient = openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0, timeout=1.0)
    abandoned = health(tiny_url)["abandoned_requests"]
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="tiny-random", messages=QUESTION, n=16, max_tokens=2000, temperature=1.0)
    assert wait_for(lambda: health(tiny_url)["active_rows"] == 0, 10), "the server kept decoding for a client that left"
    assert health(tiny_url)["abandoned_requests"] == abandoned + 1


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)
    assert "gpt-4o" in caught.value.message and caught.value.body["code"] == "model_not_found"


def test_bad_requests_are_400_with_a_reason(client):
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=2, stream=True)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(model="tiny-random", messages=QUESTION, response_format={"type": "json_schema"})


def test_local_server_stops_its_process_on_errors(tmp_path):
    log_path = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="inside the block"), local_server("tiny-random", log_path=log_path, threads=1) as url:
        pid = health(url)["pid"]
        raise RuntimeError("inside the block")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        health(url)
    assert "Uvicorn running" in log_path.read_text()


PARENT = """
import json, sys, urllib.request, openai
from ropd.serve import local_server
with local_server("tiny-random", threads=1) as url:
    print(json.load(urllib.request.urlopen(url.removesuffix("/v1") + "/health"))["pid"], flush=True)
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "hi"}], n=16, max_tokens=2000)
"""


@pytest.mark.slow
def test_server_exits_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        time.sleep(1.0)
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not process_running(server_pid), 20), "the server outlived the process that started it"


def test_local_server_reports_a_failed_start(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ServeError, match="exited with code 1") as caught, local_server(str(empty), threads=1):
        pass
    assert "config.json" in str(caught.value), "the error should show the end of the server's log"


def test_int8_linear_is_close_to_float_and_batch_invariant():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    quantized = Int8Linear(linear)
    x = torch.randn(6, 3, 256)
    with torch.inference_mode():
        exact, approx = linear(x), quantized(x)
        assert approx.dtype == x.dtype and approx.shape == exact.shape
        assert (approx - exact).abs().max() < 0.02 * exact.abs().max()
        assert torch.equal(quantized(x[:1]), approx[:1])


def test_int8_linear_prefill_path_agrees_with_the_decoding_path():
    """A long prompt (>= PREFILL_ROWS rows) is multiplied in float32 from the same int8 weights."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    quantized = Int8Linear(linear)
    x = torch.randn(1, PREFILL_ROWS, 256)
    with torch.inference_mode():
        prefill = quantized(x)
        decode = torch.cat([quantized(x[:, i : i + 1]) for i in range(PREFILL_ROWS)], dim=1)
        exact = linear(x)
    assert prefill.dtype == x.dtype
    assert (prefill - decode).abs().max() < 0.01 * exact.abs().max()  # bfloat16 rounding of the decoding path only
    assert (prefill - exact).abs().max() < 0.02 * exact.abs().max()


def test_int8_model_keeps_the_rest_in_float32_and_matches_the_float_model():
    with torch.inference_mode():
        exact, quantized = load_served_model("tiny-random", "float32"), load_served_model("tiny-random", "int8")
        linears = [m for m in quantized.modules() if isinstance(m, Int8Linear)]
        assert linears and not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
        others = [t for m in quantized.modules() if not isinstance(m, Int8Linear) for t in [*m._parameters.values(), *m._buffers.values()]]
        assert all(t.dtype == torch.float32 for t in others if t is not None and t.is_floating_point())
        ids = torch.randint(0, exact.config.vocab_size, (1, 80))  # long enough for the float32 prefill path
        close = torch.nn.functional.cosine_similarity(exact(ids).logits.flatten(), quantized(ids).logits.flatten(), dim=0)
        assert close > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["auto", "int8"])
def test_packaged_model_answers_sensibly(dtype):
    with local_server("smollm2-135m", dtype=dtype, threads=1) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        questions = ["What is the capital of France? Answer in one word.", "What color is the sky on a clear day? Answer in one word."]
        messages = [[{"role": "user", "content": q}] for q in questions]

        def ask(m: list[dict]):
            return client.chat.completions.create(model="smollm2-135m", messages=m, max_tokens=16, temperature=0)

        solo = [ask(m).choices[0].message.content for m in messages]
        with ThreadPoolExecutor(2) as pool:
            together = [r.choices[0].message.content for r in pool.map(ask, messages)]
        for answers in (solo, together):
            assert "Paris" in answers[0] and "blue" in answers[1].lower(), answers
        # Batch shape changes the last bits of attention sums; in float32 these answers never flipped in
        # repeated runs, while the int8 model sometimes words the second one differently when batched.
        if dtype == "auto":
            assert together == solo
        reply = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Give the capital of France as a JSON object with the key city."}],
            response_format={"type": "json_object"},
            max_tokens=40,
            temperature=0,
        )
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
