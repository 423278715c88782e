"""The API key goes in the Authorization header and nowhere else.

A fresh canary key is exported as OPENAI_API_KEY for `ropd teach` and a one-step `ropd train`
(scripted rubricator and judge over HTTP, a local teacher served by ropd with its log in the output
folder). The server tempts every error path: one request is refused with 401 and one fails with 500,
each with the Authorization header echoed in its error body, as some servers do. Afterwards the
canary is searched for in every byte the runs left behind and in everything they printed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from scripted_pipeline import REPO, Scripted, kind_of, record_figure, settings, train_command, write_config

from ropd.testing.scripted_server import Reply, ScriptedServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


class Tempting:
    """Scripted answers, except that the first request of each kind in `refuse` gets a 401 and of each kind in `crash`
    a 500, both with the Authorization header the server received copied into the error message."""

    def __init__(self, refuse: set[str], crash: set[str]):
        self.scripted, self.refuse, self.crash = Scripted(), set(refuse), set(crash)
        self.server: ScriptedServer | None = None
        self.echoed: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        kind = kind_of(body)
        with self.lock:
            if kind in self.refuse:
                self.refuse.remove(kind)
                status, message = 401, "Incorrect API key provided: {auth}"
            elif kind in self.crash:
                self.crash.remove(kind)
                status, message = 500, "internal error while checking the header 'Authorization: {auth}'"
            else:
                return self.scripted(body)
            auth = self.server.auth_headers[-1]  # every request carries the same header
            self.echoed.append(auth)
        error = {"message": message.format(auth=auth), "type": "scripted", "code": status}
        return Reply(status=status, raw=json.dumps({"error": error}))


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=360, cwd=cwd)


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def test_a_canary_key_appears_in_no_artifact_log_or_message(tmp_path):
    canary = "sk-canary-" + secrets.token_hex(16)
    env = {**os.environ, "OPENAI_API_KEY": canary, "PYTHONPATH": str(REPO)}
    dataset, out = tmp_path / "prompts.jsonl", tmp_path / "run"
    dataset.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i + 2}?"}) + "\n" for i in range(4)))
    handler = Tempting(refuse={"teacher", "rubric"}, crash={"teacher", "judge"})
    outputs = []
    with ScriptedServer(handler) as server:
        handler.server = server
        teach = [
            *(
                sys.executable,
                "-m",
                "ropd.cli",
                "teach",
                "--quiet",
                "--dataset",
                str(dataset),
                "--teacher",
                "scripted",
                "--num-teacher-answers",
                "1",
            ),
            *("--teacher-base-url", server.base_url, "--output", str(out), "--teacher-max-concurrency", "1"),
        ]
        refused = run(teach, env, tmp_path)  # the 401 loses one prompt: exit 1, the others are cached
        assert refused.returncode == 1 and "Bearer ***" in refused.stderr, refused.stderr[-2000:]
        refilled = run(teach, env, tmp_path)
        assert refilled.returncode == 0, refilled.stderr[-2000:]
        assert json.loads(refilled.stdout)["answers_fetched"] == 1

        values = settings(server, out, **{"data.dataset": str(dataset), "training.max_steps": 1})
        values |= {"teacher.model": "tiny-random", "teacher.base_url": None, "teacher.num_answers": 1, "teacher.max_tokens": 8}
        values |= {"teacher.use_truncated": True}  # random weights rarely stop within 8 tokens: use the cut-off answers
        values |= {"judge.model": "scripted", "judge.base_url": server.base_url, "judge.max_retries": 1}
        trained = run(train_command(write_config(tmp_path / "run.yaml", values)), env, tmp_path)
        assert trained.returncode == 0, trained.stderr[-3000:]
        outputs = [refused, refilled, trained]

    assert set(server.auth_headers) == {f"Bearer {canary}"}  # the key was really sent, and only in the header
    assert handler.echoed == [f"Bearer {canary}"] * 4 and not handler.refuse and not handler.crash  # every tempting error happened
    assert "no reward" in trained.stderr and "HTTP 401" in trained.stderr  # the rubric 401 reached the logs, scrubbed
    assert (out / "serve-tiny-random.log").is_file() and (out / "checkpoint-1").is_dir() and (out / "final").is_dir()
    assert {"cache.sqlite", "config.yaml", "metrics.jsonl", "usage.json"} <= {p.name for p in out.iterdir()}
    for result in outputs:
        assert canary not in result.stdout + result.stderr
    assert files_holding(tmp_path, canary.encode()) == []
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 1e6
    text = f"{len(files)} files ({size:.0f} MB) and 3 commands' output searched, 0 hits"
    record_figure("secrets", text, files=len(files), megabytes=round(size))
    assert files_holding(tmp_path, canary.removeprefix("sk-").encode()) == []
