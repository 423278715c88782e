"""Reliability of `ropd teach` and `ropd train`: API faults, an endpoint down, kill -9, a corrupted cache, bad input.

Teacher, rubricator and judge are one scripted OpenAI-compatible server on 127.0.0.1 (real HTTP,
real openai client); the student is the tiny random Llama. Runs go through the `ropd` command in a
subprocess where the exit code or a kill matters, and through `train(config)` otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from scripted_pipeline import REPO, ROLES, Scripted, kind_of, read_metrics, record_figure, settings, train_command, write_config
from transformers import TrainerCallback, TrainerControl, TrainerState

from ropd.cli import main
from ropd.config import TrainingConfig, load_config
from ropd.endpoints.cache import ResultCache, canonical_json
from ropd.endpoints.llm import LLMClient
from ropd.testing.judge_scripts import user_text
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.training.run import train
from ropd.training.trainers import FailureGuard

pytestmark = pytest.mark.timeout(300)

CANARY = "sk-canary-reliability-7d1c9e"


class Faults:
    """Fails a share of requests: 429 with Retry-After, 500, 503, a hang past the client's timeout, or a dropped connection.

    Whether arrival i fails comes from a seeded random stream, the kind cycles through KINDS, and
    one request body fails at most `max_in_a_row` times in a row, so the client's retries suffice.
    """

    KINDS = ("429", "500", "503", "timeout", "reset")

    def __init__(self, handler, rate: float, seed: int = 1, hang: float = 6.0, max_in_a_row: int = 2):
        self.handler, self.rate, self.hang, self.max_in_a_row = handler, rate, hang, max_in_a_row
        self.stream = random.Random(seed)
        self.attempts: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        key = canonical_json(body)
        with self.lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
            fail = self.stream.random() < self.rate and attempt < self.max_in_a_row
            kind = self.KINDS[sum(self.injected.values()) % len(self.KINDS)] if fail else None
            if kind:
                self.injected[kind] += 1
        if kind is None:
            return self.handler(body)
        return {
            "429": Reply(status=429, headers={"retry-after-ms": "20"}),
            "500": Reply(status=500),
            "503": Reply(status=503, headers={"retry-after": "0"}),
            "timeout": Reply(delay=self.hang),
            "reset": Reply(drop=True),
        }[kind]


def run_env() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": CANARY, "PYTHONPATH": str(REPO)}


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(LLMClient, "backoff_initial", 0.01)
    monkeypatch.setattr(LLMClient, "backoff_max", 0.05)


# --- 1. faults at a set rate: nothing lost, every retry counted ------------------------------------------------


def write_dataset(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: what is {i} times 7?"}) + "\n" for i in range(count)))
    return path


@pytest.mark.slow
def test_teach_under_30_percent_faults_loses_nothing_and_counts_every_retry(tmp_path):
    dataset, out = write_dataset(tmp_path / "prompts.jsonl", 30), tmp_path / "run"
    faults = Faults(Scripted(), rate=0.3)
    command = [
        *(sys.executable, "-m", "ropd.cli", "teach", "--quiet", "--dataset", str(dataset), "--teacher", "scripted"),
        *("--teacher-base-url", "BASE", "--num-teacher-answers", "2", "--output", str(out), "--teacher-seed", "0"),
        *("--teacher-timeout", "5", "--teacher-max-concurrency", "6"),
    ]
    with ScriptedServer(faults) as server:
        command[command.index("BASE")] = server.base_url
        result = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
        time.sleep(0.2)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    injected = sum(faults.injected.values())
    assert set(faults.injected) == set(Faults.KINDS)  # every kind of fault happened
    assert 0.15 <= injected / len(server.requests) <= 0.45
    assert (summary["prompts"], summary["answers_fetched"], summary["missing"]) == (30, 60, 0)
    assert summary["retries"] == injected  # each fault cost exactly one counted retry
    assert summary["requests"] == len(server.requests) == 30 + injected
    with ResultCache(out / "cache.sqlite") as cache:
        assert cache.stats()["roles"]["teacher"]["rows"] == 60
    assert CANARY not in result.stderr + result.stdout
    text = f"{injected} of {len(server.requests)} requests faulted {dict(faults.injected)}; {summary['retries']} retries counted"
    record_figure("api faults, teach", text, faulted=injected, requests=len(server.requests), retries=summary["retries"])


@pytest.mark.slow
def test_train_under_30_percent_faults_scores_every_group_and_counts_every_retry(tmp_path, quick_backoff):
    scripted = Scripted()
    faults = Faults(scripted, rate=0.3)
    out = tmp_path / "run"
    with ScriptedServer(faults) as server:
        values = settings(server, out, **{"teacher.timeout": 5, "judge.timeout": 5, "teacher.max_retries": 4, "judge.max_retries": 4})
        train(load_config(overrides=values))
        time.sleep(0.2)
    steps = read_metrics(out)
    assert [m["step"] for m in steps] == [1, 2]
    assert [m["rubric/group_failure_rate"] for m in steps] == [0.0, 0.0]  # every group scored
    assert len(scripted.answered["judge"]) == len(scripted.answered["rubric"]) == 4  # 2 steps x 2 groups, each once
    retries = sum(m[f"{role}/retries"] for m in steps for role in ROLES)
    requests = sum(m[f"{role}/requests"] for m in steps for role in ROLES)
    assert sum(faults.injected.values()) >= 1
    assert retries == sum(faults.injected.values())
    assert requests == len(server.requests)
    text = f"{retries:.0f} of {requests:.0f} requests faulted {dict(faults.injected)}; every group of both steps scored"
    record_figure("api faults, train", text, faulted=round(retries), requests=round(requests))
    assert json.loads((out / "usage.json").read_text())  # the run's usage summary was written
    assert (out / "final" / "config.json").is_file()


# --- 2. the endpoint down: a whole step skipped, and a run that stops cleanly --------------------------------------


class Outage(TrainerCallback):
    """Marks the endpoint down during the given optimizer steps (1-based)."""

    def __init__(self, steps: set[int]):
        self.steps = steps
        self.down = False

    def on_step_begin(self, args, state, control, **kwargs):
        self.down = state.global_step + 1 in self.steps


@pytest.mark.slow
def test_a_step_with_the_endpoint_down_is_skipped_and_training_goes_on(tmp_path, quick_backoff):
    outage, scripted = Outage({2}), Scripted()
    out = tmp_path / "run"

    def handler(body):
        return Reply(status=503, headers={"retry-after": "0"}) if outage.down else scripted(body)

    with ScriptedServer(handler) as server:
        final = train(load_config(overrides=settings(server, out, **{"training.max_steps": 3})), callbacks=[outage])
    steps = read_metrics(out)
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert [m["rubric/group_failure_rate"] for m in steps] == [0.0, 1.0, 0.0]
    down = steps[1]
    assert down["reward"] is None  # no group of step 2 was scored: no reward at all, not a reward of 0
    assert down["loss"] == 0.0 and down["grad_norm"] == 0.0  # zero advantage: the skipped groups push nothing
    assert sum(down[f"{role}/failures"] for role in ROLES) == 2  # one failed call per group, after its retry
    assert sum(down[f"{role}/retries"] for role in ROLES) == 2
    assert final.is_dir() and (out / "checkpoint-3").is_dir()
    rates = [m["rubric/group_failure_rate"] for m in steps]
    record_figure("endpoint down", f"failed groups per step {rates}; step 2's reward None; steps 1 and 3 trained", failed_group_rate=rates)


@pytest.mark.slow
def test_persistent_failures_stop_the_run_with_a_checkpoint_and_a_message_then_resume(tmp_path, quick_backoff):
    scripted, out = Scripted(), tmp_path / "run"
    state = {"broken": True}

    def handler(body):  # down from the moment the first checkpoint exists, until "fixed"
        if state["broken"] and (out / "checkpoint-1").exists():
            return Reply(status=503, raw=json.dumps({"error": {"message": "upstream overloaded"}}), headers={"retry-after": "0"})
        return scripted(body)

    with ScriptedServer(handler) as server:
        values = settings(server, out, **{"training.max_steps": 6, "training.max_failed_steps": 1})
        config_file = write_config(tmp_path / "run.yaml", values)
        result = subprocess.run(train_command(config_file), env=run_env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
        message = " ".join(result.stderr.split())
        assert result.returncode == 1, result.stderr[-3000:]
        assert "error: training stopped at step 2: more than 50% of the prompt groups got no reward in each of the last 1 steps" in message
        assert "(training.max_failed_group_rate, training.max_failed_steps)" in message
        # the failing phase (step 2's prompts have no teacher answers yet) and the server's own message
        assert "last failure: prompt 'gsm_symbolic-s0-" in message and "', teacher: teacher call to scripted" in message
        assert "failed after 2 attempt(s): HTTP 503" in message and "upstream overloaded" in message
        assert f"{out / 'checkpoint-2'}: fix the cause, then rerun with --resume" in message
        assert CANARY not in result.stderr + result.stdout
        assert (out / "checkpoint-2" / "trainer_state.json").is_file() and not (out / "final").exists()
        assert [m["rubric/group_failure_rate"] for m in read_metrics(out)] == [0.0, 1.0]

        state["broken"] = False  # the endpoint is back: the run resumes from the saved step
        train(load_config(overrides={**values, "training.max_steps": 3, "output.resume": True}))
    assert [m["rubric/group_failure_rate"] for m in read_metrics(out)] == [0.0, 1.0, 0.0]
    assert (out / "final").is_dir()
    record_figure("endpoint down for good", "stopped at step 2 with exit 1, checkpoint-2 and a message naming the phase; --resume finished")


class FakeReward:
    groups_scored = groups_failed = 0
    last_failure = None


@pytest.mark.parametrize(
    ("failed_per_step", "stops_at"),
    [
        ([3, 3, 3], 3),  # over half failed in 3 steps in a row
        ([3, 3, 2, 3, 3, 3], 6),  # exactly half is not over half: the count starts again
        ([4, 4, 0, 4, 4, 1], None),
        ([0, 0, 0, 0], None),
    ],
)
def test_the_run_stops_after_max_failed_steps_consecutive_failed_steps(tmp_path, failed_per_step, stops_at):
    reward = FakeReward()
    guard = FailureGuard([reward], TrainingConfig(), tmp_path)  # defaults: over 0.5 of the groups, 3 steps in a row
    state, stopped = TrainerState(), None
    for step, failed in enumerate(failed_per_step, start=1):
        reward.groups_scored += 4
        reward.groups_failed += failed
        state.global_step = step
        control = TrainerControl()
        guard.on_step_end(None, state, control)
        if control.should_training_stop:
            assert control.should_save and guard.error is not None  # a checkpoint first, then the stop
            stopped = step
            break
    assert stopped == stops_at
    if stops_at:
        assert f"training stopped at step {stops_at}" in guard.error and f"checkpoint-{stops_at}" in guard.error


def test_the_failure_thresholds_are_config_fields_with_bounds():
    config = load_config()
    assert (config.training.max_failed_group_rate, config.training.max_failed_steps) == (0.5, 3)
    with pytest.raises(ValueError, match=r"training\.max_failed_group_rate"):
        load_config(overrides={"training.max_failed_group_rate": 1.5})
    with pytest.raises(ValueError, match=r"training\.max_failed_steps"):
        load_config(overrides={"training.max_failed_steps": 0})


# --- 3. kill -9 during `ropd train`, then --resume: no paid call repeated --------------------------------------
# (kill -9 during `ropd teach`: tests/test_teacher.py::test_teach_killed_midway_then_rerun_repeats_no_call)


@pytest.mark.slow
def test_train_killed_after_its_first_checkpoint_resumes_without_repeating_a_paid_call(tmp_path, capsys):
    scripted, out = Scripted(), tmp_path / "run"
    step_two, resumed = threading.Event(), threading.Event()
    first_run_answered: list[dict] = []

    def handler(body):
        if not resumed.is_set():
            if step_two.is_set() or (out / "checkpoint-1" / "trainer_state.json").exists():
                step_two.set()  # step 2 has begun: hold its calls until the process is killed
                return Reply(delay=60)
            first_run_answered.append(body)
        return scripted(body)

    with ScriptedServer(handler) as server:
        config_file = write_config(tmp_path / "run.yaml", settings(server, out))
        first = subprocess.Popen(train_command(config_file), env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        assert step_two.wait(timeout=180), "step 2 never started"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        assert not (out / "checkpoint-2").exists()
        with ResultCache(out / "cache.sqlite") as cache:  # intact after the kill
            assert cache.stats()["rows"] > 0
        resumed.set()
        before = {kind: len(bodies) for kind, bodies in scripted.answered.items()}
        assert main(["train", "--config", str(config_file), "--resume"]) == 0, capsys.readouterr().err[-3000:]
    assert [m["step"] for m in read_metrics(out)] == [1, 2]
    paid_before = {canonical_json(b) for b in first_run_answered}
    rerun_bodies = {kind: bodies[before[kind] :] for kind, bodies in scripted.answered.items()}
    assert not paid_before & {canonical_json(b) for bodies in rerun_bodies.values() for b in bodies}  # nothing asked twice
    # Step 2 only: one rubric and one verdict call per group; step 1's were never asked again.
    assert len(rerun_bodies["rubric"]) == len(rerun_bodies["judge"]) == 2
    questions_before = {user_text(b) for b in first_run_answered if kind_of(b) == "teacher"}
    assert not questions_before & {user_text(b) for b in rerun_bodies["teacher"]}
    assert len(questions_before | {user_text(b) for b in rerun_bodies["teacher"]}) == 4  # each prompt's answers fetched once
    rerun = {k: len(v) for k, v in rerun_bodies.items()}
    text = f"first run {len(paid_before)} paid calls; rerun {rerun}, 0 repeated"
    record_figure("kill -9, train", text, paid=len(paid_before), rerun=rerun)


# --- 4. a truncated or corrupted cache: `ropd train` exits 2 and leaves it byte-identical ------------------------------


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def scramble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8192] = random.Random(0).randbytes(8192)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "problem"), [(truncate, "is truncated"), (scramble, "is corrupted")])
def test_train_refuses_a_damaged_cache_with_exit_2_and_leaves_it_untouched(tmp_path, capsys, damage, problem):
    out = tmp_path / "run"
    out.mkdir()
    cache_file = out / "cache.sqlite"
    with ResultCache(cache_file) as cache:
        for i in range(200):
            cache.put(ResultCache.make_key(i=i), "teacher", {"text": "paid answer " * 50}, {}, {})
    damage(cache_file)
    before = hashlib.sha256(cache_file.read_bytes()).hexdigest()
    with ScriptedServer(Scripted()) as server:
        code, message = cli_train(capsys, server, out)
    assert code == 2, message
    assert f"error: cache file {cache_file} {problem}" in message and "left untouched" in message
    assert hashlib.sha256(cache_file.read_bytes()).hexdigest() == before
    assert server.requests == [] and not list(out.glob("checkpoint-*"))


# --- 5. bad input: rejected before any model is loaded or any call is paid for --------------------------------------


def cli_train(capsys, server: ScriptedServer, out: Path, **overrides) -> tuple[int, str]:
    flags = [f"--config={write_config(out.parent / 'bad.yaml', settings(server, out, **overrides))}"]
    code = main(["train", *flags])
    return code, " ".join(capsys.readouterr().err.split())


def jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        ([{"id": "a", "prompt": "fine"}, '{"id": "b", "prompt": '], "row 2 (line 2): not valid JSON"),
        ([{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "   "}], "row 2: field 'prompt'"),
        ([{"id": "a", "prompt": "fine"}, {"id": "b", "answer": "3"}], "row 2: field 'prompt' is missing"),
        ([{"id": "a", "prompt": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}], "row 1: field 'prompt.1.role'"),
    ],
)
def test_malformed_and_empty_rows_exit_2_naming_the_row(tmp_path, capsys, rows, named):
    with ScriptedServer(Scripted()) as server:
        code, message = cli_train(capsys, server, tmp_path / "run", **{"data.dataset": jsonl(tmp_path / "d.jsonl", rows)})
    assert code == 2 and named in message and "d.jsonl" in message
    assert server.requests == []


def test_a_prompt_longer_than_the_limit_exits_2_naming_its_id_and_length(tmp_path, capsys):
    rows = [{"id": "short", "prompt": "What is 2 + 2?"}, {"id": "long-one", "prompt": "Count the words. " + "word " * 300}]
    dataset = jsonl(tmp_path / "d.jsonl", rows)
    with ScriptedServer(Scripted()) as server:
        code, message = cli_train(capsys, server, tmp_path / "run", **{"data.dataset": dataset, "data.max_prompt_tokens": 100})
        assert code == 2
        assert "1 prompt(s) are longer than the 100-token limit (data.max_prompt_tokens): id 'long-one' (3" in message
        # Unset, the limit is the student's context (2048 for tiny-random) minus max_completion_length.
        rows.append({"id": "huge", "prompt": "word " * 2100})
        code, message = cli_train(capsys, server, tmp_path / "run2", **{"data.dataset": jsonl(tmp_path / "d.jsonl", rows)})
        assert code == 2 and "longer than the 2036-token limit" in message and "id 'huge' (21" in message
        assert "long-one" not in message
        assert server.requests == []


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{% block user %}{{ question }} {{ answerz }}{% endblock %}", "unknown variable(s) 'answerz'"),
        ("{% block user %}{% for a in answers %}{{ a.txt }}{% endfor %}{% endblock %}", "'txt'"),
        ("{% block user %}{{ question }{% endblock %}", "line 1"),
        (None, "template"),
    ],
)
def test_a_bad_judge_template_exits_2_naming_the_problem_before_any_work(tmp_path, capsys, template, named):
    path = tmp_path / "judge.jinja"
    if template is not None:
        path.write_text(template)
    with ScriptedServer(Scripted()) as server:
        code, message = cli_train(capsys, server, tmp_path / "run", **{"judge.verifier_template": str(path)})
    assert code == 2 and named in message and "judge.jinja" in message
    assert server.requests == [] and not (tmp_path / "run" / "cache.sqlite").exists()


def test_a_bad_config_value_exits_2_naming_the_field(tmp_path, capsys):
    with ScriptedServer(Scripted()) as server:
        code, message = cli_train(capsys, server, tmp_path / "run", **{"training.max_failed_group_rate": 2})
    assert code == 2 and "field 'training.max_failed_group_rate'" in message and "bad.yaml" in message
