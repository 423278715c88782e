"""What a rubric reward adds to a training step: `ropd train` with a 1 s-latency judge vs an instant rule reward.

The same tiny random student trains on the same gsm_symbolic prompts twice per batch size:
  - method ropd: teacher, rubricator and judge are a scripted OpenAI-compatible endpoint on
    127.0.0.1, in its own process, that answers every request after a fixed latency (1 s by
    default); teacher answers are fetched into the run's cache first, as `ropd teach` would;
  - method grpo: an outcome reward checked by code against the reference answer (no API call; math-verify
    parsing takes about 30 ms per unparseable completion, so it is quick but not free).
The difference of their median step times is the rubric reward's overhead. If groups are scored
concurrently it stays near two rounds of latency (rubric, then judge) whatever the number of prompts.
The table is printed and appended, with the date and the machine's load, to
experiments/results/step_overhead.json (`--out`), the file the README's table cites.

    .venv/bin/python experiments/bench_step_overhead.py [--prompts 2 8 32] [--steps 4] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench_reward_latency import RESULTS, append_run, machine_state, slow_endpoint  # the scripted endpoint and the results file

from ropd.config import RunConfig, load_config
from ropd.data import load_prompts
from ropd.endpoints.cache import ResultCache
from ropd.reward.setup import build_rubric_reward
from ropd.training.run import train


def run_config(method: str, prompts: int, args: argparse.Namespace, base_url: str, out: Path) -> RunConfig:
    return load_config(
        overrides={
            "method.name": method,
            "teacher.model": "bench-teacher",
            "teacher.base_url": base_url,
            "teacher.num_answers": 4,
            "judge.max_concurrency": 64,
            "judge.chunk_size": args.chunk_size,
            "teacher.max_concurrency": 64,
            "student.model": "tiny-random",
            "data.dataset": f"reasoning-gym:gsm_symbolic?size={prompts * args.steps}&seed=0",
            "training.max_steps": args.steps,
            "training.prompts_per_step": prompts,
            "training.num_generations": args.rollouts,
            "training.max_completion_length": args.completion_length,
            "training.truncated_reward": None,  # the random student's rollouts all reach the limit: keep the update
            "training.save_steps": 10_000,
            "output.dir": str(out),
            "output.cache": str(out.parent / f"{out.name}-cache.sqlite"),
        }
    )


def prefetch_teacher_answers(config: RunConfig) -> None:
    """Fill the run's cache with the teacher answers, as `ropd teach` does before training."""
    rows = load_prompts(config.data.dataset, config.data.split, config.data.max_prompts, config.data.system_prompt)
    with ResultCache(config.output.cache) as cache:
        asyncio.run(build_rubric_reward(config, rows, cache).teacher.fetch_all(rows, progress=False))


def step_times(out: Path) -> tuple[list[float], list[float]]:
    """Per step: wall time and reward time, from the run's metrics.jsonl."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step_time" in r]
    return [r["step_time"] for r in steps], [r.get("time/reward", 0.0) for r in steps]


def timed_run(method: str, prompts: int, args: argparse.Namespace, base_url: str, tmp: Path) -> tuple[float, float]:
    """Median step time and median reward time over the steps after the first (which warms up)."""
    out = tmp / f"{method}-{prompts}"
    config = run_config(method, prompts, args, base_url, out)
    if method == "ropd":
        prefetch_teacher_answers(config)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):  # training's own output
        train(config)
    wall, reward = step_times(out)
    return statistics.median(wall[1:]), statistics.median(reward[1:])


def measure(prompts: int, args: argparse.Namespace, base_url: str, tmp: Path) -> dict:
    """One pair of runs (rule reward, rubric reward) at `prompts` prompts per step: median step and reward seconds."""
    rule_step, rule_reward = timed_run("grpo", prompts, args, base_url, tmp)
    rubric_step, rubric_reward = timed_run("ropd", prompts, args, base_url, tmp)
    return {
        "prompts_per_step": prompts,
        "grpo_step_s": round(rule_step, 2),
        "grpo_reward_s": round(rule_reward, 2),
        "ropd_step_s": round(rubric_step, 2),
        "ropd_reward_s": round(rubric_reward, 2),
        "difference_s": round(rubric_step - rule_step, 2),
        "ratio": round(rubric_step / rule_step, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[2, 8, 32], help="prompts per step, one pair of runs each")
    parser.add_argument("--steps", type=int, default=4, help="training steps per run (the first is not counted)")
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--chunk-size", type=int, default=None, help="answers per judge call (default: the whole group in one call)")
    parser.add_argument("--out", type=Path, default=RESULTS / "step_overhead.json", help="results file the run is appended to")
    parser.add_argument("--note", default="", help="what else ran on the machine, stated with the run")
    args = parser.parse_args()
    record = {"machine": machine_state(), "note": args.note, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "note")}}
    rows = []
    with slow_endpoint(args.latency) as (base_url, _):
        print(f"tiny random student, {args.rollouts} rollouts of {args.completion_length} tokens per prompt")
        print(f"{args.latency:.1f} s per API call")
        print(f"{os.cpu_count()} cores; median over steps 2..{args.steps} of each run")
        print("| prompts per step | rule reward (grpo): step (reward) | rubric reward (ropd): step (reward) | overhead | ratio |")
        print("|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for prompts in args.prompts:
                row = measure(prompts, args, base_url, Path(tmp))
                rows.append(row)
                print(
                    f"| {prompts} | {row['grpo_step_s']:.2f} s ({row['grpo_reward_s']:.2f} s) | {row['ropd_step_s']:.2f} s "
                    f"({row['ropd_reward_s']:.2f} s) | {row['difference_s']:+.2f} s | {row['ratio']:.2f}x |",
                    flush=True,
                )
    record["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    append_run(args.out, {**record, "rows": rows})
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
