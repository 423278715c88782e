"""A scripted teacher, rubricator and judge for whole-pipeline tests, and the run settings those tests share.

`Scripted` answers every kind of request a `ropd teach` / `ropd train` run makes (teacher answers,
honouring n; rubrics; verdicts decided by a fixed hash of each answer's text) and keeps the bodies
it answered by kind, so a test can count paid calls per kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import yaml

from ropd.testing.judge_scripts import blocks, criteria_texts, rubric_json, user_text
from ropd.testing.scripted_server import Reply, ScriptedServer

REPO = Path(__file__).resolve().parent.parent
ROLES = ("teacher", "rubricator", "judge")
TEACHER_ANSWER = "Add the two amounts, then the total is 42."
CRITERIA = [("states a number", 3), ("is short", 1), ("shows work", 2), ("ends cleanly", 4)]
DATASET = "reasoning-gym:gsm_symbolic?size=4&seed=0"
FIGURES_ENV = "ROPD_FIGURES_FILE"  # set by experiments/test_figures.py


def record_figure(name: str, text: str, **values: object) -> None:
    """Print a figure a test measured (`pytest -s` shows it) and, when $ROPD_FIGURES_FILE names a file, append it
    there as one JSON line: experiments/test_figures.py collects them into experiments/results/test_figures.json."""
    print(f"\n{name}: {text}")
    if path := os.environ.get(FIGURES_ENV):
        with open(path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps({"name": name, "text": text, **values}, default=str) + "\n")


def kind_of(body: dict) -> str:
    text = user_text(body)
    return "judge" if "<<<BEGIN ANSWER" in text else "rubric" if "<<<BEGIN REFERENCE" in text else "teacher"


def decide(answer: str, criterion: int) -> bool:
    return hashlib.sha256(f"{criterion}:{answer}".encode()).digest()[0] % 2 == 0


class Scripted:
    """Teacher (honours n), rubricator and judge in one handler; keeps every body it answered, by kind."""

    def __init__(self):
        self.answered: dict[str, list[dict]] = {"teacher": [], "rubric": [], "judge": []}
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> Reply | str:
        kind = kind_of(body)
        with self.lock:
            self.answered[kind].append(body)
        if kind == "judge":
            answers = blocks(user_text(body), "ANSWER")
            assert len(criteria_texts(body)) == len(CRITERIA)
            verdicts = [{"answer": int(label), "met": [decide(text, j) for j in range(len(CRITERIA))]} for label, text in answers.items()]
            return json.dumps({"verdicts": verdicts})
        if kind == "rubric":
            return rubric_json(CRITERIA)
        return Reply(content=[f"{TEACHER_ANSWER} (sample {i})" for i in range(body.get("n", 1))], usage=(12, 30))


def settings(server: ScriptedServer, out: Path, **overrides) -> dict:
    return {
        "teacher.model": "scripted",
        "teacher.base_url": server.base_url,
        "teacher.num_answers": 2,
        "teacher.max_retries": 1,
        "judge.max_retries": 1,
        "judge.max_reasks": 1,
        "student.model": "tiny-random",
        "data.dataset": DATASET,
        "training.max_steps": 2,
        "training.prompts_per_step": 2,
        "training.num_generations": 3,
        "training.max_completion_length": 12,
        "training.truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
        "training.learning_rate": 1e-3,
        "training.save_steps": 1,
        "output.dir": str(out),
        **overrides,
    }


def write_config(path: Path, values: dict) -> Path:
    tree: dict = {}
    for dotted, value in values.items():
        section, field = dotted.split(".")
        tree.setdefault(section, {})[field] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def train_command(config_file: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "ropd.cli", "train", "--config", str(config_file), *flags]


def read_metrics(out: Path) -> list[dict]:
    """The per-step records that carry rubric metrics (one per optimizer step)."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if "rubric/group_failure_rate" in m]
