"""The public API: every export resolves and is typed, and every script in examples/ runs as written against a scripted
OpenAI-compatible endpoint (real HTTP, real openai client) on the tiny random student.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_pipeline import REPO, Scripted

import ropd
from ropd.testing.scripted_server import ScriptedServer

EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def test_every_export_resolves_and_the_package_is_typed():
    missing = [name for name in ropd.__all__ if getattr(ropd, name, None) is None]
    assert not missing
    assert (Path(ropd.__file__).parent / "py.typed").is_file()
    assert set(dir(ropd)) == set(ropd.__all__)
    with pytest.raises(AttributeError, match="no attribute 'build_rubric_reward'"):
        ropd.build_rubric_reward  # noqa: B018  (not exported: private)


def test_the_docs_say_that_what_is_not_exported_is_private():
    readme = (REPO / "README.md").read_text()
    assert "not exported" in readme and "private" in readme
    assert all(f"examples/{p.name}" in readme for p in EXAMPLES)


def run_example(path: Path, server: ScriptedServer, out: Path, *flags: str) -> list[dict]:
    command = [sys.executable, str(path), "--teacher", "scripted", "--base-url", server.base_url, "--output-dir", str(out), *flags]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the checkout's ropd, as installed
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=out.parent, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]  # TRL prints its logs as Python dicts


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_trl_grpo_example_trains_with_the_rubric_reward_beside_trl_rewards(tmp_path):
    scripted = Scripted()
    with ScriptedServer(scripted) as server:
        (result,) = run_example(REPO / "examples" / "trl_grpo_rubric_reward.py", server, tmp_path / "run", "--student", "tiny-random")
    assert result["steps"] == 2
    assert result["groups_scored"] == 2 * 1  # one prompt group of 4 rollouts per step
    assert len(scripted.answered["rubric"]) == 2 and len(scripted.answered["judge"]) == 2
    assert result["usage"]["judge"]["requests"] == 2
    assert (tmp_path / "run" / "cache.sqlite").is_file()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_step_by_step_example_calls_teacher_rubric_judge_and_scores(tmp_path):
    scripted = Scripted()
    with ScriptedServer(scripted) as server:
        steps = {r["step"]: r["result"] for r in run_example(REPO / "examples" / "rubric_steps.py", server, tmp_path / "run")}
    assert list(steps) == ["teacher", "rubric", "judge", "score", "usage"]
    assert len(steps["teacher"]) == 2 and steps["teacher"][0].startswith("Add the two amounts")
    assert len(steps["rubric"]["criteria"]) == 4
    assert [len(v["met"]) for v in steps["judge"]] == [4, 4, 4]
    rewards = steps["score"]["rewards"]
    assert len(rewards) == 3 and all(0.0 <= r <= 1.0 for r in rewards)
    assert {k: len(v) for k, v in scripted.answered.items()} == {"teacher": 1, "rubric": 1, "judge": 1}
    assert steps["usage"]["teacher"]["requests"] == 1


def test_every_example_is_tested():
    tested = {"trl_grpo_rubric_reward.py", "rubric_steps.py"}
    assert {p.name for p in EXAMPLES} == tested
