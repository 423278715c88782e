"""The tool demo: every method trains with the sandboxed Python tool on, from the command line, on one CPU core.

Task: reasoning-gym `products` with 5-6 digit factors ("142450 * 371493"), which a 135M model cannot multiply in its
head and the Python tool does exactly. Models (`experiments/make_tool_model.py`): a student and a tool-using white-box
teacher, both the packaged SmolLM2-135M briefly fine-tuned on tool trajectories with TRL's qwen2_5 chat template. The
rubricator and judge of ropd are the packaged Qwen2.5-Coder-1.5B on llama.cpp; ropd's teacher answers come from the
tool-using teacher, served by llama.cpp with tool calls, through ropd's own tool loop.

Each method runs `ropd train` as a subprocess (the command is recorded) for `--steps` steps of 1 prompt x 4 rollouts,
and the per-step metrics that matter here are collected from its metrics.jsonl: tool calls per rollout
(`tools/call_frequency`), the share of calls that failed (`tools/failure_frequency`), reward, SOD's per-turn step
weights, and time. Output: `<out>/results.json` and `<out>/results.md`.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python experiments/tools_demo.py --out experiments/results/tools
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODELS = Path.home() / ".cache/ropd/models"
TEACHER = MODELS / "smollm2-135m-tools-teacher"
STUDENT = MODELS / "smollm2-135m-tools-student"
DATASET = "reasoning-gym:products?size=16&seed=0&min_digits=5&max_digits=6"
KEYS = (
    "tools/call_frequency",
    "tools/failure_frequency",
    "reward",
    "reward_std",
    "completions/mean_length",
    "sod/steps_per_completion",
    "sod/step_weight_mean",
    "sod/step_weight_min",
    "sod/frac_steps_downweighted",
    "opd/reverse_kl",
    "rubric/reward_mean",
    "rubric/group_failure_rate",
    "quality/student_correct_rate",
    "train/skipped_update",
    "time/sample",
    "time/teacher_logits",
    "time/teacher",
    "time/rubric",
    "time/judge",
    "step_time",
)
METHOD_FLAGS = {
    "sod": ["--method", "sod", "--method-sequence-reward", "outcome", "--scale-rewards", "group", "--method-sod-steps", "turns"],
    "opd": ["--method", "opd"],
    "grpo": ["--method", "grpo"],
    "ropd": [
        "--method",
        "ropd",
        "--judge",
        "qwen2.5-coder-1.5b",
        "--num-teacher-answers",
        "2",
        "--teacher-max-tokens",
        "96",
        "--teacher-temperature",
        "0.7",
        "--teacher-timeout",
        "900",
        "--judge-timeout",
        "900",
        "--judge-max-tokens",
        "512",
        "--judge-min-criteria",
        "2",
        "--judge-max-criteria",
        "3",
    ],
}


def command(method: str, out: Path, steps: int) -> list[str]:
    """The `ropd train` command line of one method."""
    return [
        str(Path(sys.executable).with_name("ropd")),
        "train",
        "--student",
        str(STUDENT),
        "--student-chat-template",
        "qwen2_5",
        "--teacher",
        str(TEACHER),
        "--tools",
        "python",
        "--tools-max-iterations",
        "2",
        "--dataset",
        DATASET,
        "--max-steps",
        str(steps),
        "--prompts-per-step",
        "1",
        "--num-generations",
        "4",
        "--max-completion-length",
        "96",
        "--learning-rate",
        "1e-5",
        "--save-steps",
        "100",
        "--output",
        str(out / method),
        *METHOD_FLAGS[method],
    ]


def run(method: str, runs: Path, steps: int) -> dict:
    """Train one method; its per-step metrics (KEYS) and wall time."""
    cmd = command(method, runs, steps)
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.monotonic() - started
    (runs / f"{method}.log").write_text(done.stdout + done.stderr)
    metrics = runs / method / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    steps_seen = [{k: r[k] for k in ("step", *KEYS) if k in r} for r in records if "loss" in r or "reward" in r]
    return {
        "method": method,
        "command": shlex.join(cmd),
        "exit_status": done.returncode,
        "error": done.stderr.strip().splitlines()[-1] if done.returncode else None,
        "wall_seconds": round(seconds, 1),
        "steps": steps_seen,
    }


def table(results: list[dict]) -> str:
    """results.md: one row per method and step."""
    lines = [
        "| method | step | tool calls per rollout | failed calls | reward (mean) | SOD steps per rollout | SOD step weight mean / min | "
        "step time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for s in result["steps"]:
            weights = f"{s['sod/step_weight_mean']:.3f} / {s['sod/step_weight_min']:.3f}" if "sod/step_weight_mean" in s else ""
            calls, failed = s.get("tools/call_frequency", 0), s.get("tools/failure_frequency", 0)
            reward, turns = s.get("reward", float("nan")), s.get("sod/steps_per_completion", "")
            lines.append(
                f"| {result['method']} | {s['step']} | {calls:.2f} | {failed:.2f} | {reward:.3f} | {turns} | {weights} "
                f"| {s.get('step_time', 0):.0f} s |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="experiments/results/tools", help="Where results.json and results.md go.")
    parser.add_argument("--runs", default="runs/tools-demo", help="Run folders (models, caches, logs); not committed.")
    parser.add_argument("--methods", default="sod,opd,grpo,ropd", help="Comma-separated methods to run.")
    parser.add_argument("--steps", type=int, default=2, help="Steps per method.")
    args = parser.parse_args()
    for model in (TEACHER, STUDENT):
        if not model.is_dir():
            sys.exit(f"{model} is missing: make it first with experiments/make_tool_model.py (see its docstring)")
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    results = []
    for method in args.methods.split(","):
        print(f"{method} ...", flush=True)
        results.append(run(method, runs, args.steps))
        print(json.dumps(results[-1])[:400], flush=True)
    cards = {role: json.loads((model / "tool_model_card.json").read_text()) for role, model in (("teacher", TEACHER), ("student", STUDENT))}
    summary = {"dataset": DATASET, "models": cards, "cpu": "one core (taskset -c 1), OMP_NUM_THREADS=1", "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
