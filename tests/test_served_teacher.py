"""opd and sod with the teacher behind a server that scores given tokens (vLLM's prompt_logprobs protocol).

`ScoringServer` speaks that protocol on loopback with a real small model (the tiny random teacher, in transformers),
so the values can be checked against the model itself. llama.cpp's llama-server, the engine ropd serves local models
with on a CPU, returns no prompt log-probabilities: the last test shows the error a run gets from it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from ropd.config import EndpointConfig, MethodConfig, load_config
from ropd.endpoints.models import load_model, load_tokenizer
from ropd.reward.answers import outcome_reward
from ropd.training.opd import VocabularyMismatchError, build_white_box_trainer
from ropd.training.run import TrainingError, grpo_args, train
from ropd.training.teacher_logprobs import ServedTeacherLogprobs, TeacherLogprobsError

pytestmark = pytest.mark.timeout(300)


class ScoringServer:
    """POST /v1/completions with token-id prompts and prompt_logprobs: every position's token log-probability under a
    local model, as vLLM answers it (`with_logprobs=False`: a server that leaves them out)."""

    def __init__(self, model_name: str = "tiny-random-teacher", with_logprobs: bool = True):
        self.model = load_model(model_name, "float32").eval()
        self.with_logprobs = with_logprobs
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def logprobs(self, ids: list[int]) -> list[dict | None]:
        with torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0].float()
        logps = torch.log_softmax(logits, dim=-1)
        return [None] + [{str(t): {"logprob": logps[i - 1, t].item(), "rank": 1}} for i, t in enumerate(ids) if i > 0]

    def reply(self, body: dict) -> dict:
        with self.lock:
            self.requests.append(body)
            choices = []
            for index, ids in enumerate(body["prompt"]):
                choice = {"index": index, "text": "x", "finish_reason": "length", "logprobs": None}
                if self.with_logprobs and body.get("prompt_logprobs") is not None:
                    choice["prompt_logprobs"] = self.logprobs(ids)
                choices.append(choice)
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"], "choices": choices}

    def __enter__(self) -> ScoringServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                data = json.dumps(owner.reply(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_client_returns_the_served_models_log_probabilities_of_the_given_tokens():
    sequences, prompt_lengths = [[1, 5, 9, 200, 17], [3, 4, 8], [7, 7, 7, 7]], [2, 1, 3]
    with ScoringServer() as server:
        client = ServedTeacherLogprobs(EndpointConfig(model="teacher", base_url=server.base_url), chunk_size=2)
        values = client.sampled_logprobs(sequences, prompt_lengths)
        assert len(server.requests) == 2 and server.requests[0]["prompt_logprobs"] == 0  # two chunks of at most 2
        for sequence, start, got in zip(sequences, prompt_lengths, values, strict=True):
            want = [server.logprobs(sequence)[i][str(sequence[i])]["logprob"] for i in range(start, len(sequence))]
            assert got == pytest.approx(want, abs=1e-6)


def served_config(tmp_path, base_url: str, method: str, **overrides):
    values = {
        "method.name": method,
        "teacher.model": "tiny-random-teacher",
        "teacher.base_url": base_url,
        "student.model": "tiny-random",
        "data.dataset": "reasoning-gym:gsm_symbolic?size=2&seed=0",
        "method.sequence_reward": "outcome",
        "training.max_steps": 1,
        "training.prompts_per_step": 1,
        "training.num_generations": 2,
        "training.max_completion_length": 8,
        "training.truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
        "training.learning_rate": 1e-3,
        "training.save_steps": 10,
        "output.dir": str(tmp_path / method),
    }
    return load_config(overrides=values | overrides)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["opd", "sod"])
def test_opd_and_sod_train_on_a_served_teachers_log_probabilities(tmp_path, method):
    with ScoringServer() as server:
        final = train(served_config(tmp_path, server.base_url, method))
        scored = [r for r in server.requests if len(r["prompt"][0]) > 3]  # the start-up check sends 3 tokens
    assert scored and sum(len(r["prompt"]) for r in scored) == 2  # the step's two rollouts, scored by the server
    records = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in records if "loss" in r)
    assert "time/teacher_logits" in step
    assert ("opd/reverse_kl" if method == "opd" else "sod/abs_signal_mean") in step
    before, after = load_model("tiny-random"), load_model(str(final))
    assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters(), strict=True))


def test_a_served_teacher_with_another_vocabulary_is_refused(tmp_path):
    config = served_config(tmp_path, "http://127.0.0.1:9/v1", "opd", **{"teacher.tokenizer": "qwen2.5-coder-1.5b"})
    with pytest.raises(VocabularyMismatchError, match="--method ropd"):
        train(config)
    nameless = served_config(tmp_path, "http://127.0.0.1:9/v1", "opd", **{"teacher.model": "served-teacher"})
    with pytest.raises(TrainingError, match=r"teacher\.tokenizer"):
        train(nameless)


def test_a_server_without_log_probabilities_stops_the_run_with_a_clear_error(tmp_path):
    with ScoringServer(with_logprobs=False) as server, pytest.raises(TrainingError, match=r"gave no log-probabilities.*vllm serve"):
        train(served_config(tmp_path, server.base_url, "sod"))


@pytest.mark.slow
def test_llama_cpp_serves_no_prompt_log_probabilities_and_says_so(tmp_path):
    from ropd.endpoints.serve import ServeError, local_server

    try:
        server = local_server("tiny-random-teacher", log_path=tmp_path / "serve.log", engine="llama.cpp")
        base_url = server.__enter__()
    except ServeError as exc:
        pytest.fail(f"llama.cpp cannot serve here (`make install` builds its llama-server): {exc}")
    try:
        client = ServedTeacherLogprobs(EndpointConfig(model="tiny-random-teacher", base_url=base_url, max_retries=0))
        with pytest.raises(TeacherLogprobsError, match=r"llama\.cpp's llama-server cannot"):
            client.check()
    finally:
        server.__exit__(None, None, None)


def test_a_sampling_temperature_other_than_1_is_refused_before_any_request(tmp_path):
    # A server's log-probabilities are at temperature 1 and cannot be rescaled to the student's (no full distribution).
    with ScoringServer() as server:
        with pytest.raises(TrainingError, match=r"training\.temperature is 0\.7.*cannot be rescaled.*--temperature 1"):
            train(served_config(tmp_path, server.base_url, "opd", **{"training.temperature": 0.7}))
        assert server.requests == []
        args = grpo_args(served_config(tmp_path, server.base_url, "sod", **{"training.temperature": 1.5}))
        served = ServedTeacherLogprobs(EndpointConfig(model="teacher", base_url=server.base_url))
        with pytest.raises(TeacherLogprobsError, match=r"training\.temperature is 1\.5"):
            build_white_box_trainer(
                "sod",
                model=load_model("tiny-random"),
                teacher_logprobs=served,
                processing_class=load_tokenizer("tiny-random"),
                args=args,
                train_dataset=None,
                reward_funcs=[outcome_reward],
                method_config=MethodConfig(),
            )
