"""Whole prompt groups on several processes: a group TRL splits across processes is scored once, whole, by one
process, and every process gets the same rewards back.

Two ways: threads standing in for processes (an all-gather over a barrier), which shows the regrouping in detail and
runs in seconds; and a real two-process `accelerate launch` of `ropd train` on the CPU (gloo) whose groups are split
in two. `accelerate launch --cpu --num_processes 2` starts processes through mpirun, absent here (it then starts one);
`--multi_gpu` starts them through torchrun, and with no GPU visible the trainer's Accelerator runs them on the CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from scripted_pipeline import Scripted

from ropd.config import PUBLISHED_JUDGE, RunConfig
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.teacher import TeacherPool
from ropd.testing.judge_scripts import blocks, contains_rule, is_judge_request, judge_reply, rubric_json, scripted_client, user_text
from ropd.testing.scripted_server import ScriptedServer
from ropd.training.distributed import ProcessFailureError
from ropd.types import PromptRow

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
CRITERIA = [("mentions 42", 5), ("mentions because", 2), ("mentions **", 1), ("mentions sure", 2)]
PROMPTS = {p: PromptRow.model_validate({"id": p, "prompt": [{"role": "user", "content": f"Question {p}: 6*7?"}]}) for p in ("a", "b", "c")}
ROLLOUTS = {"a": ["It is 42 because **", "41"], "b": ["sure, 42", "no idea"], "c": ["42", "sure because"]}


class ThreadProcesses:
    """`count` threads acting as processes: gather is an all-gather over a barrier, in index order."""

    def __init__(self, index: int, shared: dict):
        self.index, self.count, self.shared = index, shared["count"], shared
        self.local_index = index

    def gather(self, value):
        self.shared["slots"][self.index] = value
        self.shared["barrier"].wait()
        out = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return out


def thread_rewards(config: RunConfig, server: ScriptedServer, shared: dict) -> list[RubricReward]:
    """One rubric reward per thread-process, all talking to the scripted teacher, rubricator and judge."""
    return [
        RubricReward(
            config,
            TeacherPool(scripted_client(server, "teacher"), num_answers=1),
            scripted_client(server, "rubricator"),
            scripted_client(server, "judge"),
            PROMPTS,
            processes=ThreadProcesses(rank, shared),
        )
        for rank in range(shared["count"])
    ]


def respond(body):
    text = user_text(body)
    if is_judge_request(body):
        return judge_reply(body, contains_rule)
    if "<<<BEGIN REFERENCE" in text:
        return rubric_json(CRITERIA)
    return "sure: it is 42 because 6*7=42. **42**"


def test_a_group_split_across_processes_is_scored_once_whole_and_every_process_gets_the_same_rewards():
    # The batch TRL would gather: a a b | b c c. Process 0 holds half of b's group, process 1 the other half.
    ids = ["a", "a", "b", "b", "c", "c"]
    texts = [t for p in ("a", "b", "c") for t in ROLLOUTS[p]]
    local = [(ids[:3], texts[:3]), (ids[3:], texts[3:])]
    shared = {"count": 2, "barrier": threading.Barrier(2, timeout=60), "slots": [None, None]}
    results: dict[int, tuple] = {}
    # One judge call per group holding its rollouts only (teacher answers not judged), rewards from its booleans only.
    judge = {**PUBLISHED_JUDGE, "rubric_refresh": "prompt", "score_teacher_answers": "off"}
    config = RunConfig.model_validate({"training": {"num_generations": 2}, "judge": judge})
    with ScriptedServer(respond) as server:
        rewards = thread_rewards(config, server, shared)

        def run(rank: int, step: int) -> None:
            metrics: dict[str, float] = {}
            part_ids, part_texts = local[rank]
            prompts = [[m.model_dump() for m in PROMPTS[i].prompt] for i in part_ids]
            state = SimpleNamespace(global_step=step)
            out = asyncio.run(
                rewards[rank](prompts=prompts, completions=part_texts, id=part_ids, trainer_state=state, log_metric=metrics.__setitem__)
            )
            results[rank] = (out, metrics)

        def both(step: int) -> None:
            threads = [threading.Thread(target=run, args=(rank, step), daemon=True) for rank in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert set(results) == {0, 1}

        both(0)
        rubric_calls = [b for b in server.requests if "<<<BEGIN REFERENCE" in user_text(b)]
        judge_calls = [b for b in server.requests if is_judge_request(b)]
        # One rubric and one judge call per group, each holding the whole group: b's two halves were joined.
        assert len(rubric_calls) == 3 and len(judge_calls) == 3
        assert sorted(sorted(blocks(user_text(b), "ANSWER").values()) for b in judge_calls) == sorted(sorted(r) for r in ROLLOUTS.values())
        (out0, metrics0), (out1, metrics1) = results[0], results[1]
        expected = [0.8, 0.0, 0.7, 0.0, 0.5, 0.4]  # points of met criteria / 10, per rollout in batch order
        assert out0 + out1 == pytest.approx(expected)
        assert [s.model_dump() for s in rewards[0].last_group_scores] == [s.model_dump() for s in rewards[1].last_group_scores]
        assert metrics0 == metrics1 and metrics0["rubric/partial_group_rate"] == 0.0
        assert metrics0["rubricator/requests"] == 3 and metrics0["judge/requests"] == 3  # usage summed over the processes
        assert rewards[0].usage_by_role() == rewards[1].usage_by_role()
        assert rewards[0].groups_scored == rewards[1].groups_scored == 3

        # Rubrics induced on either process are reused on both (rubric_refresh: prompt), whoever scores the group next.
        results.clear()
        local.reverse()  # now process 0 holds b c c and process 1 a a b
        both(1)
        assert len([b for b in server.requests if "<<<BEGIN REFERENCE" in user_text(b)]) == 3
        assert results[0][1]["rubric/reuse_rate"] == 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tmp_path: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess:
    """tests/distributed_groups.py on two CPU processes (gloo) under accelerate, also on a machine with GPUs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout's ropd
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())),
        *(str(REPO / "tests" / "distributed_groups.py"), "--base-url", base_url, "--out", str(tmp_path), *extra),
    ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.slow
def test_two_processes_under_accelerate_score_each_split_group_once(tmp_path):
    scripted = Scripted()
    with ScriptedServer(scripted) as server:
        done = launch(tmp_path, server.base_url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert_each_group_scored_once(tmp_path, scripted)


def assert_each_group_scored_once(tmp_path: Path, scripted: Scripted) -> None:
    """What tests/distributed_groups.py recorded shows every group scored once, whole, and its rewards on both processes."""
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Two steps of one prompt x 4 rollouts, each process holding 2 of them: one rubric and one judge call per group.
    assert [len(calls) for calls in ranks] == [2, 2]
    assert len(scripted.answered["rubric"]) == 2 and len(scripted.answered["judge"]) == 2
    assert [len(blocks(user_text(b), "ANSWER")) for b in scripted.answered["judge"]] == [4, 4]
    for call0, call1 in zip(*ranks, strict=True):
        assert len(call0["local"]) == len(call1["local"]) == 2  # the group was split in two
        assert call0["groups"] == call1["groups"] and len(call0["groups"]) == 1 and call0["indices"] == [[0, 1, 2, 3]]
        assert call0["local"] + call1["local"] == call0["groups"][0]["rewards"]  # each process got its own rollouts' rewards
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "rubric/partial_group_rate" in m]
    assert len(steps) == 2 and all(m["rubric/partial_group_rate"] == 0.0 for m in steps)


@pytest.mark.slow
def test_an_exception_on_one_process_stops_both_within_seconds_with_its_message_and_phase(tmp_path):
    # Process 0 scores the step's one group and its teacher answers raise; process 1 waits for the outcome meanwhile.
    with ScriptedServer(Scripted()) as server:
        done = launch(tmp_path, server.base_url, "--fail-rank", "0")
        stopped = time.time()
    assert done.returncode != 0
    injected = json.loads((tmp_path / "injected.json").read_text())["at"]
    errors = {rank: json.loads((tmp_path / f"rank{rank}.error.json").read_text()) for rank in (0, 1)}  # both stopped by it
    expected = "process 0 of 2 failed while scoring prompt '"
    for error in errors.values():
        assert expected in error["error"] and "(teacher answers): RuntimeError: injected: the teacher answer cache" in error["error"]
        assert error["at"] - injected < 10
    assert stopped - injected < 60


def raised_in_threads(work, count: int = 2) -> dict[int, BaseException]:
    """Run work(rank) on `count` threads standing in for processes; what each raised. None may still be waiting."""
    raised: dict[int, BaseException] = {}

    def run(rank: int) -> None:
        try:
            work(rank)
        except BaseException as exc:
            raised[rank] = exc

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return raised


def test_a_failure_on_one_process_raises_on_every_process_in_every_phase():
    """Process 1 breaks while reading its completions (a short completion_ids list), then process 0's teacher answers
    raise: each time both processes raise the same error, naming the process and the phase, and none waits."""
    shared = {"count": 2, "barrier": threading.Barrier(2, timeout=30), "slots": [None, None]}
    config = RunConfig.model_validate({"training": {"num_generations": 2}, "judge": PUBLISHED_JUDGE})
    with ScriptedServer(respond) as server:
        rewards = thread_rewards(config, server, shared)

        def both(completion_ids: list[list[list[int]]]) -> dict[int, BaseException]:
            prompts = [[m.model_dump() for m in PROMPTS["a"].prompt]]
            return raised_in_threads(
                lambda rank: asyncio.run(rewards[rank](prompts=prompts, completions=["42"], completion_ids=completion_ids[rank], id=["a"]))
            )

        raised = both([[[1]], []])
        assert {rank: str(exc).split(":")[0] for rank, exc in raised.items()} == {
            rank: "process 1 of 2 failed while reading the completions" for rank in (0, 1)
        }
        assert all(isinstance(exc, ProcessFailureError) for exc in raised.values())
        assert "ValueError" in str(raised[0]) and isinstance(raised[1].__cause__, ValueError)

        async def broken(self, row):
            raise RuntimeError("the cache is unreadable")

        rewards[0].teacher.answers = types.MethodType(broken, rewards[0].teacher)  # process 0 scores the one group
        raised = both([[[1]], [[1]]])
        expected = "process 0 of 2 failed while scoring prompt 'a' (teacher answers): RuntimeError: the cache is unreadable"
        assert [str(raised[rank]) for rank in (0, 1)] == [expected, expected]


@pytest.mark.slow
def test_two_processes_share_one_local_teacher_server_and_score_every_group_once(tmp_path):
    from ropd.endpoints.serve import ServeError, llama_server_binary

    try:
        llama_server_binary()
    except ServeError as exc:
        pytest.fail(f"llama.cpp's server is not built here (`make install` builds it): {exc}")
    scripted = Scripted()  # rubricator and judge; the teacher is the tiny random model behind ropd's own llama-server
    with ScriptedServer(scripted) as server:
        done = launch(tmp_path, server.base_url, "--local-teacher")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert scripted.answered["teacher"] == []  # the teacher answers came from the local server
    assert_each_group_scored_once(tmp_path, scripted)
    counts = [json.loads((tmp_path / f"rank{rank}.servers.json").read_text()) for rank in (0, 1)]
    assert counts == [[1, 1], [1, 1]]  # at each step of either process, the launch ran one llama-server
    assert [p.name for p in (tmp_path / "run").glob("serve-*.log")] == ["serve-tiny-random-teacher.log"]


def test_a_local_server_that_fails_to_start_stops_every_process_with_its_error(tmp_path):
    """Only the machine's first process starts the servers; when that fails, the others get its error, not a wait."""
    from contextlib import ExitStack

    from ropd.reward.setup import serve_local_models

    shared = {"count": 2, "barrier": threading.Barrier(2, timeout=30), "slots": [None, None]}
    teacher = {"model": "smollm2-135m", "serve_engine": "vllm"}  # a packaged GGUF file, which vLLM cannot serve
    config = RunConfig.model_validate({"teacher": teacher, "output": {"dir": str(tmp_path)}})

    def run(rank: int) -> None:
        with ExitStack() as stack:
            serve_local_models(config, stack, ThreadProcesses(rank, shared))

    raised = raised_in_threads(run)
    expected = "process 0 of 2 failed while starting the local servers: ServeError: 'smollm2-135m' is a GGUF model"
    assert [str(raised[rank])[: len(expected)] for rank in (0, 1)] == [expected, expected]
