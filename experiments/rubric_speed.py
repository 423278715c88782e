"""Where the rubric arm's time goes, and what shortens it: replay a bench arm's recorded groups through its reward.

The groups a bench arm trained on (steps/<arm>-seed<S>-groups.jsonl: question, the 4 teacher answers, the 8 student
rollouts) are scored again, step by step (2 groups per reward call, as in the bench), by the arm's rubricator and
judge served as the bench serves them (llama-server on loopback, as many threads as cores this process may use: pin
it with taskset to compare with a bench arm on one core). The teacher answers come from a loopback endpoint that
replays the recorded ones, so every variant sees the same inputs. Settings are changed with --set (a dotted config
key and a YAML value), e.g. a speculative-decoding flag for llama-server:

    taskset -c 1 .venv/bin/python experiments/rubric_speed.py --variant ngram-spec \\
        --set 'judge.serve_args=[--spec-type, ngram-mod]'

Each run appends its per-step figures (phase seconds, prompt/cached/completion tokens per role, the reward's ranking
quality where correctness is known) to experiments/results/rubric_speed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reward_latency import append_run, machine_state

from ropd.bench.config import arm_config, load_bench_config
from ropd.config import RunConfig, with_settings
from ropd.data import load_prompts
from ropd.endpoints.cache import ResultCache
from ropd.reward.setup import build_rubric_reward, serve_local_models
from ropd.testing.judge_scripts import user_text
from ropd.testing.scripted_server import Reply, ScriptedServer

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS_PER_STEP = 2


def read_groups(path: Path, steps: int) -> list[list[dict]]:
    """The recorded groups of the first `steps` steps that scored, as [[group, group], ...]."""
    by_step: dict[int, list[dict]] = {}
    for line in path.read_text().splitlines():
        group = json.loads(line)
        if group.get("rollouts") and group.get("teacher_answers"):
            by_step.setdefault(group["step"], []).append(group)
    return [by_step[step] for step in sorted(by_step)[:steps]]


def recorded_teacher(groups: list[dict]):
    """A loopback 'teacher' that answers each question with its recorded teacher answers."""
    answers = {g["question"]: g["teacher_answers"] for g in groups}

    def respond(body: dict) -> Reply:
        text = user_text(body)
        question = next(q for q in answers if q in text)
        n = int(body.get("n", 1))
        return Reply(content=(answers[question] * n)[:n])

    return respond


async def replay(config: RunConfig, steps: list[list[dict]], judge_url: str, cache: ResultCache) -> list[dict]:
    prompts = {p.id: p for p in load_prompts(config.data.dataset)}
    rows = [prompts[g["prompt_id"]] for step in steps for g in step]
    reward = build_rubric_reward(config, rows, cache, judge_base_url=judge_url)
    await reward.teacher.fetch_all(rows, progress=False)
    figures = []
    for index, step in enumerate(steps, start=1):
        metrics: dict[str, float] = {}
        ids = [g["prompt_id"] for g in step for _ in g["rollouts"]]
        started = time.perf_counter()
        await reward(
            prompts=[[m.model_dump() for m in prompts[i].prompt] for i in ids],
            completions=[[{"role": "assistant", "content": r}] for g in step for r in g["rollouts"]],
            completion_ids=None,
            id=ids,
            trainer_state=SimpleNamespace(global_step=index),
            log_metric=metrics.__setitem__,
        )
        wall = time.perf_counter() - started
        row = {"step": index, "reward_wall_s": round(wall, 1)}
        for role in ("rubricator", "judge"):
            prompt, total = metrics.get(f"{role}/prompt_tokens", 0), metrics.get(f"{role}/tokens", 0)
            row[role] = {
                "requests": metrics.get(f"{role}/requests", 0),
                "prompt_tokens": prompt,
                "cached_tokens": metrics.get(f"{role}/cached_tokens", 0),
                "completion_tokens": total - prompt,
            }
        row["time_rubric_s"] = round(metrics.get("time/rubric", 0.0), 1)
        row["time_judge_s"] = round(metrics.get("time/judge", 0.0), 1)
        row["pairwise_accuracy"] = metrics.get("quality/pairwise_acc")
        row["student_correct_rate"] = metrics.get("quality/student_correct_rate")
        row["failed_groups"] = metrics.get("rubric/group_failure_rate")
        figures.append(row)
        print(json.dumps(row), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path("experiments/bench-cpu-powered.yaml"))
    parser.add_argument("--arm", default="ropd")
    parser.add_argument("--groups", type=Path, default=None, help="default: <bench output>/steps/<arm>-seed0-groups.jsonl")
    parser.add_argument("--steps", type=int, default=3, help="recorded steps replayed (2 groups each)")
    parser.add_argument("--variant", required=True, help="a name for what --set changes ('baseline' for none)")
    parser.add_argument("--set", action="append", default=[], help="KEY=YAML override of the arm's config (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "rubric_speed.json")
    args = parser.parse_args()
    bench = load_bench_config(args.bench)
    groups_path = args.groups or Path(bench.output_dir) / "steps" / f"{args.arm}-seed0-groups.jsonl"
    steps = read_groups(groups_path, args.steps)
    machine = machine_state()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        teacher = stack.enter_context(ScriptedServer(recorded_teacher([g for step in steps for g in step])))
        config = with_settings(arm_config(bench, args.arm, seed=0), args.set)
        config = config.model_copy(
            update={
                "teacher": config.teacher.model_copy(update={"model": "recorded-teacher", "base_url": teacher.base_url, "check": False}),
                "output": config.output.model_copy(update={"dir": tmp, "cache": None}),
            }
        )
        judge_url = serve_local_models(config, stack)["judge"]
        cache = stack.enter_context(ResultCache(Path(tmp) / "cache.sqlite"))
        figures = asyncio.run(replay(config, steps, judge_url, cache))
    walls = [f["reward_wall_s"] for f in figures]
    record = {
        "machine": {**machine, "cpus_allowed": len(os.sched_getaffinity(0))},
        "variant": args.variant,
        "settings": args.set,
        "arm": args.arm,
        "bench": str(args.bench),
        "groups": str(groups_path),
        "steps": figures,
        "mean_reward_wall_s": round(statistics.fmean(walls), 1),
    }
    append_run(args.out, record)
    mean = record["mean_reward_wall_s"]
    print(f"{args.variant}: reward wall time per step {mean} s (mean of {len(walls)} steps); appended to {args.out}")


if __name__ == "__main__":
    main()
