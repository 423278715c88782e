"""`ropd train` end to end: a tiny random student, a scripted teacher/rubricator/judge over real HTTP.

The scripted judge decides every criterion by a rule on the rollout's text, so the test knows the
reward of every rollout and can check that those rewards, and nothing else, drive the update.
"""

import hashlib
import json
import subprocess
import sys
import threading

import pytest
import torch

from ropd.config import PUBLISHED_JUDGE, load_config
from ropd.endpoints.models import load_model
from ropd.testing.judge_scripts import blocks, criteria_texts, is_judge_request, rubric_json, user_text
from ropd.testing.scripted_server import ScriptedServer
from ropd.training.run import TrainingError, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TEACHER_ANSWER = "The total is 42."
CRITERIA = [("states a number", 3), ("is short", 1), ("shows work", 2), ("ends cleanly", 4)]
POINTS = [points for _, points in CRITERIA]


def decide(answer: str, criterion_index: int) -> bool:
    """The scripted verdict: a fixed pseudo-random function of the answer text and the criterion."""
    return hashlib.sha256(f"{criterion_index}:{answer}".encode()).digest()[0] % 2 == 0


def expected_reward(answer: str) -> float:
    return sum(p for j, p in enumerate(POINTS) if decide(answer, j)) / sum(POINTS)


class ScriptedJudge:
    """Teacher, rubricator and judge in one server; records the reward it implies for every student rollout."""

    def __init__(self, failing_question: str | None = None):
        self.failing_question = failing_question
        self.calls: list[list[float]] = []  # per judge call, in arrival order: the rewards of its student rollouts
        self.lock = threading.Lock()

    def __call__(self, body):
        text = user_text(body)
        if is_judge_request(body):
            if self.failing_question and self.failing_question in text:
                return "I cannot judge this."
            answers = blocks(text, "ANSWER")
            assert len(criteria_texts(body)) == len(CRITERIA)
            with self.lock:
                self.calls.append([expected_reward(a) for a in answers.values() if a != TEACHER_ANSWER])
            verdicts = [
                {"answer": int(label), "met": [decide(answer, j) for j in range(len(CRITERIA))], "total": 999}
                for label, answer in answers.items()
            ]
            return json.dumps({"verdicts": verdicts})
        if "<<<BEGIN REFERENCE" in text:
            return rubric_json(CRITERIA)
        return TEACHER_ANSWER


def run_config(server: ScriptedServer, out, **overrides):
    values = {
        "teacher.model": "scripted",
        "teacher.base_url": server.base_url,
        "teacher.num_answers": 1,
        "teacher.max_retries": 0,
        "judge.max_retries": 0,
        "judge.max_reasks": 1,
        "student.model": "tiny-random",
        "data.dataset": "reasoning-gym:gsm_symbolic?size=4&seed=0",
        "training.max_steps": 2,
        "training.prompts_per_step": 2,
        "training.num_generations": 3,
        "training.max_completion_length": 12,
        "training.truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
        "training.learning_rate": 1e-3,
        "training.save_steps": 1,
        "output.dir": str(out),
        **{f"judge.{k}": v for k, v in PUBLISHED_JUDGE.items()},  # the rewards are the scripted booleans' points, nothing else
        **overrides,
    }
    return load_config(overrides=values)


def read_metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_scripted_verdicts_drive_the_update_and_resume(tmp_path):
    out = tmp_path / "run"
    judge = ScriptedJudge()
    with ScriptedServer(judge) as server:
        final = train(run_config(server, out))
        steps = [m for m in read_metrics(out) if "reward" in m]
        assert [m["step"] for m in steps] == [1, 2]
        # Each step judged its two groups; its logged reward is the mean the scripted verdicts imply
        # for that step's six rollouts (the judge's own "total" of 999 is ignored).
        assert [len(call) for call in judge.calls] == [3, 3, 3, 3]
        for m, calls in zip(steps, (judge.calls[:2], judge.calls[2:]), strict=True):
            assert m["reward"] == pytest.approx(sum(calls[0] + calls[1]) / 6, abs=1e-5)
            assert m["rubric/group_failure_rate"] == 0.0
            assert {"time/sample", "time/teacher", "time/rubric", "time/judge", "time/update"} <= m.keys()
            assert m["rubric/truncated_rate"] == m["completions/clipped_ratio"]  # cut off as TRL counts it: no end token
        # The weights moved.
        before, after = load_model("tiny-random"), load_model(str(final))
        assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters(), strict=True))
        assert (out / "checkpoint-2").is_dir() and (out / "config.yaml").is_file() and (final / "tokenizer.json").is_file()

        # A second run into the same folder without --resume is refused; with it, training continues at step 3.
        with pytest.raises(TrainingError, match="--resume"):
            train(run_config(server, out))
        train(run_config(server, out, **{"training.max_steps": 3, "output.resume": True}))
        assert [m["step"] for m in read_metrics(out) if "reward" in m] == [1, 2, 3]
        assert len(judge.calls) == 6  # only step 3's two groups were judged again


def test_rewards_logged_equal_the_scripted_ones_and_a_failed_group_is_skipped(tmp_path):
    from ropd.data import load_prompts

    prompts = load_prompts("reasoning-gym:gsm_symbolic?size=2&seed=0")
    failing = prompts[1].question
    judge = ScriptedJudge(failing_question=failing)
    out = tmp_path / "run"
    with ScriptedServer(judge) as server:
        config = run_config(
            server, out, **{"data.dataset": "reasoning-gym:gsm_symbolic?size=2&seed=0", "training.max_steps": 1, "training.save_steps": 5}
        )
        train(config)
    (step,) = [m for m in read_metrics(out) if "reward" in m]
    assert step["rubric/group_failure_rate"] == 0.5
    # Only the scored group's rollouts count: the failed group is skipped (None), not zeroed.
    (scored,) = judge.calls
    assert len(scored) == 3
    assert step["reward"] == pytest.approx(sum(scored) / len(scored), abs=1e-5)


def test_bad_config_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  num_generations: 1\n")
    result = subprocess.run([sys.executable, "-m", "ropd.cli", "train", "--config", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "bad.yaml: field 'training.num_generations'" in result.stderr


def test_white_box_method_refuses_an_api_teacher(tmp_path):
    config = load_config(
        overrides={"method.name": "opd", "teacher.model": "gpt-4o", "student.model": "tiny-random", "output.dir": str(tmp_path)}
    )
    with pytest.raises(TrainingError, match="--method ropd"):
        train(config)
