"""Teacher answers: k per prompt, cached on arrival, never fetched twice, refused offline when missing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scripted_pipeline import record_figure

from ropd.config import load_config
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.models import ModelError
from ropd.reward.teacher import TeacherError, build_teacher_pool, cache_path, teach
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.types import PromptRow

pytestmark = pytest.mark.timeout(120)

CANARY = "sk-canary-teacher-4e8d2a"
REPO = Path(__file__).resolve().parent.parent


def rows(count: int) -> list[PromptRow]:
    return [PromptRow(id=f"p{i}", prompt=[{"role": "user", "content": f"What is {i} + {i}?"}]) for i in range(count)]


def answer_by_prompt(body: dict) -> Reply:
    """One answer per request (ignores n), derived from the question and the seed."""
    question = body["messages"][-1]["content"]
    if "poison" in question:
        return Reply(status=400)
    return Reply(content=f"answer to {question} / seed {body.get('seed')}", usage=(12, 30))


def config_for(server: ScriptedServer, tmp_path: Path, **teacher):
    overrides = {"teacher.model": "scripted-teacher", "teacher.base_url": server.base_url, "teacher.seed": 0, "output.dir": str(tmp_path)}
    overrides |= {f"teacher.{k}": v for k, v in teacher.items()}
    return load_config(overrides=overrides)


def pool_for(server, tmp_path, cache, **teacher):
    pool = build_teacher_pool(config_for(server, tmp_path, **teacher), cache)
    pool.client.backoff_initial = 0.01
    return pool


def test_k_answers_per_prompt_then_from_the_cache(tmp_path):
    with ScriptedServer(answer_by_prompt) as server, ResultCache(tmp_path / "c.sqlite") as cache:
        pool = pool_for(server, tmp_path, cache, num_answers=3)
        first = asyncio.run(pool.fetch_all(rows(4), progress=False))
        assert len(server.requests) == 4 + 4 * 2  # n=3 ignored: then one request per sample, n is not tried again
        assert [len(a) for a in first.values()] == [3, 3, 3, 3] and len(set(first["p0"])) == 3
        again = pool_for(server, tmp_path, cache, num_answers=3)
        assert asyncio.run(again.fetch_all(rows(4), progress=False)) == first
        assert len(server.requests) == 12 and again.usage.cache_hits == 12
        cooler = pool_for(server, tmp_path, cache, num_answers=3, temperature=0.7)  # another fingerprint: fetched anew
        asyncio.run(cooler.answers(rows(1)[0]))
        assert len(server.requests) == 12 + 3
        assert cache.stats()["roles"]["teacher"]["rows"] == 15


def test_offline_only_refuses_missing_answers_and_says_how_to_fill_them(tmp_path):
    with ScriptedServer(answer_by_prompt) as server, ResultCache(tmp_path / "c.sqlite") as cache:
        asyncio.run(pool_for(server, tmp_path, cache, num_answers=2).fetch_all(rows(2), progress=False))
        offline = pool_for(server, tmp_path, cache, num_answers=2, offline_only=True)
        before = len(server.requests)
        assert asyncio.run(offline.fetch_all(rows(2), progress=False))["p1"][0].startswith("answer to What is 1 + 1?")
        assert offline.count_missing(rows(5)) == 6
        with pytest.raises(TeacherError, match=r"6 teacher answer\(s\) for the 5 prompts .*ropd teach"):
            asyncio.run(offline.fetch_all(rows(5), progress=False))
        with pytest.raises(TeacherError, match=r"2 teacher answer.*prompt 'p4'"):
            asyncio.run(offline.answers(rows(5)[4]))
        assert len(server.requests) == before


def test_a_failing_prompt_does_not_lose_the_others(tmp_path):
    batch = [*rows(3), PromptRow(id="bad", prompt=[{"role": "user", "content": "poison"}])]
    with ScriptedServer(answer_by_prompt) as server, ResultCache(tmp_path / "c.sqlite") as cache:
        pool = pool_for(server, tmp_path, cache, num_answers=1)
        with pytest.raises(TeacherError, match=r"1 of 4 prompts got no teacher answers.*'bad'.*400"):
            asyncio.run(pool.fetch_all(batch, progress=False))
        assert pool.count_missing(batch) == 1
        assert pool.count_missing(rows(3)) == 0


def test_a_local_teacher_is_keyed_by_model_not_by_its_ephemeral_port(tmp_path):
    config = load_config(overrides={"teacher.model": "tiny-random", "output.dir": str(tmp_path)})
    with ResultCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(ModelError, match="local model"):
            build_teacher_pool(config, cache)
        one = build_teacher_pool(config, cache, local_base_url="http://127.0.0.1:4001/v1")
        two = build_teacher_pool(config, cache, local_base_url="http://127.0.0.1:4002/v1")
        assert one.client.fingerprint == two.client.fingerprint
        assert one.client.fingerprint["endpoint"].startswith("local:tiny-random@")  # the name and a fingerprint of the weights


def test_a_local_teacher_is_served_only_when_answers_are_missing(tmp_path, monkeypatch):
    """`teach` with a local teacher: the loopback server starts only if something is missing, and only that is fetched."""
    dataset = write_dataset(tmp_path / "prompts.jsonl", 3)
    config = load_config(
        overrides={"teacher.model": "tiny-random", "teacher.num_answers": 2, "output.dir": str(tmp_path), "data.dataset": str(dataset)}
    )
    started: list[str] = []
    with ScriptedServer(answer_by_prompt) as server:

        @contextlib.contextmanager
        def local_server(model, models=None, dtype="auto", engine="auto"):  # the scripted server stands in for the loopback one
            started.append(model)
            yield server.base_url

        monkeypatch.setattr("ropd.endpoints.serve.local_server", local_server)
        first = teach(config, progress=False)
        assert started == ["tiny-random"] and first["answers_fetched"] == 6 and len(server.requests) == 3 + 3
        again = teach(config, progress=False)
        assert started == ["tiny-random"] and again["cache_hits"] == 6  # all cached: no server started
        write_dataset(dataset, 4)
        more = teach(config, progress=False)
        assert started == ["tiny-random"] * 2 and (more["cache_hits"], more["answers_fetched"]) == (6, 2)
        assert len(server.requests) == 6 + 1 + 1


# --- the `ropd teach` command --------------------------------------------------------------------------------


def write_dataset(path: Path, count: int) -> Path:
    lines = [json.dumps({"id": f"q{i}", "prompt": f"Question number {i}: what is {i} times 3?"}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def teach_command(server: ScriptedServer, dataset: Path, out: Path, k: int = 3) -> list[str]:
    return [
        *(sys.executable, "-m", "ropd.cli", "teach", "--dataset", str(dataset), "--teacher", "scripted-teacher"),
        *("--teacher-base-url", server.base_url, "--num-teacher-answers", str(k), "--output", str(out), "--teacher-seed", "0"),
        *("--teacher-max-concurrency", "2", "--teacher-timeout", "10"),
    ]


def run_env() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": CANARY, "PYTHONPATH": str(REPO)}


def sample_ids(bodies: list[dict]) -> list[tuple[str, int]]:
    return [(body["messages"][-1]["content"], body.get("seed", 0)) for body in bodies]


@pytest.mark.slow
def test_teach_killed_midway_then_rerun_repeats_no_call(tmp_path):
    dataset = write_dataset(tmp_path / "prompts.jsonl", 12)
    out = tmp_path / "run"
    with ScriptedServer(answer_by_prompt, latency=0.15) as server:
        command = teach_command(server, dataset, out)
        first = subprocess.Popen(command, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while len(server.requests) < 12 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        time.sleep(0.3)  # let the server finish the requests the dead client left behind
        with ResultCache(out / "cache.sqlite") as cache:  # intact after the kill
            stored = cache.stats()["rows"]
        assert 8 <= stored < 36

        killed_at = len(server.requests)
        rerun = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=90, cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        summary = json.loads(rerun.stdout)
        rerun_requests = server.requests[killed_at:]
        assert len(rerun_requests) == 36 - stored  # only the answers the cache lacked
        assert Counter(sample_ids(rerun_requests)).most_common(1)[0][1] == 1
        assert set(sample_ids(server.requests)) == {(f"Question number {i}: what is {i} times 3?", s) for i in range(12) for s in range(3)}
        assert (summary["prompts"], summary["cache_hits"], summary["answers_fetched"], summary["missing"]) == (12, stored, 36 - stored, 0)
        assert summary["completion_tokens"] == 30 * (36 - stored)

        third = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=90, cwd=tmp_path)
        assert json.loads(third.stdout)["cache_hits"] == 36 and len(server.requests) == killed_at + len(rerun_requests)

    assert server.auth_headers[0] == f"Bearer {CANARY}"
    for text in (rerun.stdout, rerun.stderr, third.stdout, third.stderr):
        assert CANARY not in text
    for path in out.iterdir():
        assert CANARY.encode() not in path.read_bytes(), path
    text = f"killed after {stored} of 36 answers were cached; the rerun fetched the other {36 - stored}, no call repeated"
    record_figure("kill -9, teach", text, cached_before=stored, fetched_after=36 - stored)


def test_teach_exits_2_on_bad_input_and_leaves_a_corrupt_cache_alone(tmp_path):
    with ScriptedServer(answer_by_prompt) as server:
        missing = subprocess.run(teach_command(server, tmp_path / "nope.jsonl", tmp_path), env=run_env(), capture_output=True, text=True)
        assert missing.returncode == 2 and "nope.jsonl" in missing.stderr

        dataset = write_dataset(tmp_path / "prompts.jsonl", 2)
        cache = tmp_path / "cache.sqlite"
        cache.write_bytes(b"not a database at all" * 100)
        before = hashlib.sha256(cache.read_bytes()).hexdigest()
        corrupt = subprocess.run(teach_command(server, dataset, tmp_path), env=run_env(), capture_output=True, text=True)
        assert corrupt.returncode == 2 and str(cache) in " ".join(corrupt.stderr.split())
        assert hashlib.sha256(cache.read_bytes()).hexdigest() == before
        assert server.requests == []


def test_teach_reports_failed_prompts_with_exit_1(tmp_path):
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(json.dumps({"id": "ok", "prompt": "fine"}) + "\n" + json.dumps({"id": "bad", "prompt": "poison"}) + "\n")
    with ScriptedServer(answer_by_prompt) as server:
        result = subprocess.run(teach_command(server, dataset, tmp_path, k=1), env=run_env(), capture_output=True, text=True)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert (summary["answers_fetched"], summary["missing"]) == (1, 1) and "bad" in summary["error"]
    assert "rerunning fetches only the rest" in " ".join(result.stderr.split())
    with ResultCache(cache_path(load_config(overrides={"output.dir": str(tmp_path)}))) as cache:
        assert cache.stats()["rows"] == 1


def test_cache_path_follows_the_config(tmp_path):
    assert cache_path(load_config(overrides={"output.dir": str(tmp_path)})) == tmp_path / "cache.sqlite"
    assert cache_path(load_config(overrides={"output.cache": str(tmp_path / "x.db")})) == tmp_path / "x.db"
