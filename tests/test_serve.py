"""Local serving on the real engine: llama.cpp's llama-server, through the real openai client over HTTP on 127.0.0.1.

The contract ropd's teacher, rubricator and judge calls rely on: JSON-schema-constrained replies, `n`
samples, `seed`, `stop`, `max_tokens`, usage counts, concurrent requests, clear errors for bad requests,
and a server that starts cleanly, logs where it is told and stops with the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from ropd.config import EndpointConfig
from ropd.endpoints import serve
from ropd.endpoints.llm import LLMClient
from ropd.endpoints.models import load_tokenizer
from ropd.endpoints.serve import ServeError, choose_engine, local_server, server_command
from ropd.types import JudgeOutput, Rubric

pytestmark = pytest.mark.timeout(180)

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


def get(base_url: str, path: str):
    with urllib.request.urlopen(base_url.removesuffix("/v1") + path, timeout=5) as response:
        return json.load(response)


def busy_slots(base_url: str) -> int:
    return sum(bool(slot.get("is_processing")) for slot in get(base_url, "/slots"))


def server_pid(port: int) -> int:
    """The pid of the process listening on 127.0.0.1:port (from /proc)."""
    inode = None
    with open("/proc/net/tcp") as table:
        lines = table.read().splitlines()[1:]
    for line in lines:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    assert inode is not None, f"nothing listens on {port}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no process owns port {port}")


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory):
    with local_server("tiny-random", log_path=tmp_path_factory.mktemp("serve") / "tiny.log", threads=1, slot_context=1024) as url:
        yield url


@pytest.fixture
def client(tiny_url):
    return openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0, timeout=60)


def test_a_hugging_face_folder_is_converted_once_and_served_by_llama_cpp(tiny_url):
    assert choose_engine("tiny-random") == "llama.cpp"  # no GPU here
    assert "tiny-random" in [m["id"] for m in get(tiny_url, "/v1/models")["data"]]
    command = server_command("tiny-random", 1234)
    assert os.path.basename(command[0]) == "llama-server" and command[command.index("--model") + 1].endswith("-f16.gguf")
    assert server_command("tiny-random", 1234, dtype="int8")[2].endswith("-q8_0.gguf")


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


def test_n_choices_and_usage_counts_every_sample(client):
    tokenizer = load_tokenizer("tiny-random")
    prompt_tokens = len(tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    response = client.chat.completions.create(model="tiny-random", messages=QUESTION, n=3, max_tokens=5, temperature=1.0, seed=1)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.finish_reason for c in response.choices] == ["length"] * 3
    assert response.usage.prompt_tokens == prompt_tokens
    assert response.usage.completion_tokens == 15, "usage must count the tokens of all n samples"
    assert response.usage.total_tokens == prompt_tokens + 15
    assert len({c.message.content for c in response.choices}) > 1, "n samples should differ at temperature 1"


def test_seed_makes_sampling_reproducible(client):
    def sample(seed: int) -> str:
        response = client.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=12, temperature=1.0, seed=seed)
        return response.choices[0].message.content

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


def test_concurrent_requests_are_decoded_together(client, tiny_url):
    prompts = [[{"role": "user", "content": "word " * length}] for length in (3, 40, 11, 25)]
    seen_busy = []

    def ask(messages: list[dict]) -> str:
        response = client.chat.completions.create(model="tiny-random", messages=messages, max_tokens=400, temperature=1.0, seed=5)
        return response.choices[0].finish_reason

    with ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(ask, p) for p in prompts]
        while not all(f.done() for f in futures):
            seen_busy.append(busy_slots(tiny_url))
            time.sleep(0.02)
    assert all(f.result() in ("length", "stop") for f in futures)
    assert max(seen_busy) >= 2, "requests in flight together should occupy several slots at once"


def test_a_client_that_gives_up_frees_its_slot(tiny_url):
    impatient = openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=900, temperature=1.0)
    assert wait_for(lambda: busy_slots(tiny_url) == 0, 15), "the server kept decoding for a client that left"


def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError, match=r"(?i)context"):  # 1,024 tokens per slot here
        client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "word " * 3000}], max_tokens=4)
    with pytest.raises(openai.BadRequestError):  # a schema the engine cannot turn into a grammar
        client.chat.completions.create(
            model="tiny-random",
            messages=QUESTION,
            max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}},
        )
    with pytest.raises(openai.BadRequestError, match="n"):  # more samples than slots
        client.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=4, n=64)
    assert client.chat.completions.create(model="tiny-random", messages=QUESTION, max_tokens=3).choices[0].message.content


def test_the_client_negotiates_structured_output_and_samples_with_the_engine(tiny_url):
    endpoint = EndpointConfig(model="tiny-random", base_url=tiny_url, max_tokens=300, temperature=1.0, seed=3, max_retries=0)

    async def run() -> tuple[Rubric, list[str], LLMClient]:
        llm = LLMClient(endpoint, role="judge", max_reasks=2)
        try:
            rubric = await llm.chat_json(QUESTION, Rubric, json_schema=BoundedRubric.model_json_schema())
            samples = await llm.chat(QUESTION, n=8)  # more than the 4 slots: the client asks one at a time
        finally:
            await llm.aclose()
        return rubric, samples, llm

    rubric, samples, llm = asyncio.run(run())
    assert 1 <= len(rubric.criteria) <= 3
    assert len(samples) == 8 and len(set(samples)) > 1
    assert llm.usage.completion_tokens > 0 and llm.usage.failures == 0


def test_local_server_stops_its_process_and_logs_where_told(tmp_path):
    log_path = tmp_path / "run" / "server.log"
    with pytest.raises(RuntimeError, match="inside the block"), local_server("tiny-random", log_path=log_path, threads=1) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        pid = server_pid(port)
        raise RuntimeError("inside the block")
    assert not process_running(pid)
    with pytest.raises(OSError):
        get(url, "/health")
    assert f"listening on http://127.0.0.1:{port}" in log_path.read_text()


def test_a_taken_port_is_retried_with_another(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], serve.free_port()])
        monkeypatch.setattr(serve, "free_port", lambda: next(ports))
        with local_server("tiny-random", log_path=tmp_path / "s.log", threads=1) as url:
            assert get(url, "/health")["status"] == "ok"
            assert not url.endswith(f":{taken.getsockname()[1]}/v1")


PARENT = """
import sys
from ropd.endpoints.serve import local_server
with local_server("tiny-random", threads=1) as url:
    print(url, flush=True)
    sys.stdin.read()
"""


def test_the_engine_exits_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = parent.stdout.readline().strip()
        pid = server_pid(int(url.rsplit(":", 1)[1].split("/")[0]))
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not process_running(pid), 20), "the engine outlived the process that started it"


def test_models_the_engine_cannot_serve_get_a_clear_error(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"]}')
    with pytest.raises(ServeError, match=r"cannot convert .* vLLM"):
        server_command(str(empty), 1234)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(ServeError, match="exited with code") as caught, local_server(str(broken), log_path=tmp_path / "b.log"):
        pass
    assert "broken.gguf" in str(caught.value), "the error should show the end of the engine's log"
    with pytest.raises(ServeError, match="GGUF model"):
        choose_engine("smollm2-135m", "vllm")


def test_missing_engine_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("ROPD_LLAMA_SERVER", str(tmp_path / "nothing"))
    monkeypatch.setattr(serve.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServeError, match="make install"):
        serve.llama_server_binary()


@pytest.mark.slow
def test_packaged_model_is_served_from_its_gguf_and_answers_sensibly():
    with local_server("smollm2-135m", threads=2) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        questions = ["What is the capital of France? Answer in one word.", "What is the opposite of hot? Answer in one word."]
        messages = [[{"role": "user", "content": q}] for q in questions]

        def ask(m: list[dict]) -> str:
            return client.chat.completions.create(model="smollm2-135m", messages=m, max_tokens=16, temperature=0).choices[0].message.content

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(ask, messages))
        assert "Paris" in answers[0] and "cold" in answers[1].lower(), answers
        reply = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Give the capital of France as a JSON object with the key city."}],
            response_format={"type": "json_object"},
            max_tokens=40,
            temperature=0,
        )
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    assert server_command("smollm2-135m", 1)[2].endswith("SmolLM2-135M-Instruct.Q4_1.gguf"), "served from the wheel's own file"


def test_engine_threads_follow_the_cores_the_process_may_use(monkeypatch):
    """A run pinned to one core (taskset) starts llama-server with one thread: more threads than cores stall it."""
    monkeypatch.setattr(serve.os, "sched_getaffinity", lambda pid: {1})
    command = server_command("tiny-random", 1234)
    assert command[command.index("--threads") + 1] == "1" and command[command.index("--threads-batch") + 1] == "1"
    assert server_command("tiny-random", 1234, threads=3)[command.index("--threads") + 1] == "3"


def test_prompt_tokens_the_server_cached_are_counted(tiny_url):
    """A second request that repeats the first one's prompt is served mostly from llama-server's prompt cache, and the
    client's usage says how many prompt tokens that was (what the step metrics `<role>/cached_tokens` report)."""
    endpoint = EndpointConfig(model="tiny-random", base_url=tiny_url, max_tokens=4, temperature=0.0, max_retries=0)
    messages = [{"role": "system", "content": "Grade the answer. " * 30}, {"role": "user", "content": "Answer: 42"}]

    async def run() -> tuple[int, int, int]:
        llm = LLMClient(endpoint, role="judge")
        try:
            await llm.chat(messages, key_extra={"try": 1})
            first = llm.usage.cached_tokens
            await llm.chat(messages, key_extra={"try": 2})  # another cache key: asked again, not read from ropd's cache
        finally:
            await llm.aclose()
        return first, llm.usage.cached_tokens, llm.usage.prompt_tokens

    first, cached, prompt_tokens = asyncio.run(run())
    per_request = prompt_tokens / 2
    assert first < 0.1 * per_request  # the first time, at most the chat template's opening (the server is shared)
    assert 0.9 * per_request <= cached - first < per_request  # nearly all of the second prompt, never all of it


def test_serve_args_of_a_config_reach_the_engine_command_line(tmp_path):
    """judge.serve_args go to the llama-server ropd starts for a local judge, after ropd's own arguments."""
    from contextlib import ExitStack

    from ropd.config import ConfigError, load_config
    from ropd.reward.setup import serve_local_models

    extra = ["--spec-type", "ngram-mod"]
    settings = {"judge.model": "tiny-random", "judge.serve_args": extra, "output.dir": str(tmp_path / "run")}
    # Teacher and judge on one model share one server: different server settings are refused, naming both roles.
    with ExitStack() as stack, pytest.raises(ConfigError, match=r"teacher and judge use the local model 'tiny-random'.*serve_args"):
        serve_local_models(load_config(overrides={**settings, "teacher.model": "tiny-random"}), stack)
    config = load_config(overrides={**settings, "teacher.model": "tiny-random-teacher"})
    with ExitStack() as stack:
        url = serve_local_models(config, stack)["judge"]
        pid = server_pid(int(url.rsplit(":", 1)[1].split("/")[0]))
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().decode().split("\0")[:-1]
        assert argv[-2:] == extra and "--model" in argv[:-2]
        assert get(url, "/health")["status"] == "ok"
    assert not process_running(pid)
