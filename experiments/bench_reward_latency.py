"""How long one reward call takes when every API call is slow: are groups really scored concurrently?

A scripted OpenAI-compatible server on 127.0.0.1 answers every request after a fixed latency
(1 s by default). Teacher answers are fetched and cached first, as before training; then one
RubricReward call scores G groups of R rollouts: one rubric and one batched judge call per group.
With enough concurrency that is two rounds of latency (~2 s), not 2*G rounds (64 s for 32 groups).

Each run is printed and appended, with the date and the machine's load, to
experiments/results/reward_latency.json (`--out`), the file the README's table cites.

    .venv/bin/python experiments/bench_reward_latency.py [--groups 32] [--rollouts 8] [--latency 1.0] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace

from ropd.config import RunConfig
from ropd.endpoints.cache import ResultCache
from ropd.reward.setup import build_rubric_reward
from ropd.testing.judge_scripts import contains_rule, is_judge_request, judge_reply, rubric_json, user_text
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.types import PromptRow

RESULTS = Path(__file__).resolve().parent / "results"
CRITERIA = [("mentions 42", 5), ("mentions because", 2), ("mentions **", 1), ("mentions sure", 2)]
ROLLOUTS = ["It is 42 because **", "41", "sure, 42", "no idea", "42", "because", "**", "sure"]


def respond(body: dict) -> Reply | str:
    if is_judge_request(body):
        return judge_reply(body, contains_rule, final_answer="42")
    if "<<<BEGIN REFERENCE" in user_text(body):
        return rubric_json(CRITERIA)
    return Reply(content=["sure: 42 because 6*7. **42**"] * int(body.get("n", 1)))


def serve(latency: float, conn: Connection) -> None:
    """The scripted endpoint, in its own process (as a real endpoint would be): answers 'stats' until 'stop'."""
    ThreadingHTTPServer.request_queue_size = 256  # http.server's default of 5 pending connections is too few for a burst of 32
    with ScriptedServer(respond, latency=latency) as server:
        conn.send(server.base_url)
        while conn.recv() != "stop":
            conn.send({"requests": len(server.requests), "max_in_flight": server.max_in_flight})


@contextmanager
def slow_endpoint(latency: float) -> Iterator[tuple[str, Callable[[], dict]]]:
    """Run `serve` in its own process; yield its base URL and a function that returns its request stats."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(latency, theirs), daemon=True)
    server.start()

    def stats() -> dict:
        ours.send("stats")
        return ours.recv()

    try:
        if not ours.poll(60):
            raise SystemExit("the scripted endpoint did not start")
        yield ours.recv(), stats
    finally:
        ours.send("stop")
        server.join(timeout=10)


def machine_state() -> dict:
    """When and on what a measurement ran: UTC time, cores, and the load averages (1, 5, 15 minutes)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def append_run(path: Path, record: dict) -> None:
    """Add one run's record to the `runs` list of a results JSON file (created when absent)."""
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    data["runs"].append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


async def run(args: argparse.Namespace, base_url: str, stats: Callable[[], dict], cache: ResultCache) -> dict:
    """Fetch the teacher answers, then time one reward call over every group; return the run's figures."""
    rows = [
        PromptRow.model_validate({"id": f"q{i}", "prompt": [{"role": "user", "content": f"Question {i}: what is 6*7?"}]})
        for i in range(args.groups)
    ]
    endpoint = {"base_url": base_url, "max_concurrency": args.concurrency, "timeout": 30.0}
    config = RunConfig.model_validate(
        {
            "teacher": {"model": "bench-teacher", "num_answers": 4, **endpoint},
            "judge": {"model": "bench-judge", "chunk_size": args.chunk_size, **endpoint},
            "training": {"num_generations": args.rollouts},
        }
    )
    reward = build_rubric_reward(config, rows, cache)

    started = time.perf_counter()
    await reward.teacher.fetch_all(rows, progress=False)
    teacher_seconds = time.perf_counter() - started
    before = stats()["requests"]

    prompts = [[m.model_dump() for m in row.prompt] for row in rows for _ in range(args.rollouts)]
    completions = [[{"role": "assistant", "content": ROLLOUTS[j % len(ROLLOUTS)]}] for _ in rows for j in range(args.rollouts)]
    metrics: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    rewards = await reward(
        prompts=prompts,
        completions=completions,
        completion_ids=None,
        id=[row.id for row in rows for _ in range(args.rollouts)],
        trainer_state=SimpleNamespace(global_step=0),
        log_metric=metrics.__setitem__,
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    after = stats()
    judge = config.judge.model_dump(include={"chunk_size", "expected_evidence", "verifiable_criteria", "consensus_criterion"})
    return {
        "settings": {"groups": args.groups, "rollouts": args.rollouts, "teacher_answers": 4, "latency_s": args.latency, "judge": judge},
        "concurrency": args.concurrency,
        "teacher_prefetch_s": round(teacher_seconds, 2),
        "reward_wall_s": round(wall, 2),
        "sequential_s": round((after["requests"] - before) * args.latency, 1),
        "client_cpu_s": round(cpu, 2),
        "requests": after["requests"] - before,
        "retries": reward.rubric_client.usage.retries + reward.judge_client.usage.retries,
        "max_in_flight": after["max_in_flight"],
        "rubric_s_per_group": round(metrics["time/rubric"], 2),
        "judge_s_per_group": round(metrics["time/judge"], 2),
        "reward_mean": round(metrics["rubric/reward_mean"], 3),
        "rollouts_without_reward": sum(r is None for r in rewards),
    }


def report(r: dict) -> None:
    """The run's figures, as lines on stdout."""
    s = r["settings"]
    print(f"setup: {s['groups']} groups x {s['rollouts']} rollouts, 4 teacher answers each, {s['latency_s']:.2f} s latency per call")
    print(f"       judge: {s['judge']['chunk_size'] or 'the whole group'} answers per call")
    print(f"       concurrency limit {r['concurrency']} per client (rubricator and judge each); endpoint in its own process")
    print(f"teacher prefetch (cached before training): {r['teacher_prefetch_s']:.2f} s")
    print(f"reward call wall time: {r['reward_wall_s']:.2f} s  (one call after another: {r['sequential_s']:.0f} s)")
    load = f"1-minute load average {r['machine']['load_average'][0]:.1f} on {r['machine']['cores']} cores"
    print(f"  CPU time of this process during the call: {r['client_cpu_s']:.2f} s ({load})")
    print(f"  requests: {r['requests']} (retries {r['retries']}), most in flight at once: {r['max_in_flight']}")
    print(f"  mean per group: time/rubric {r['rubric_s_per_group']:.2f} s, time/judge {r['judge_s_per_group']:.2f} s")
    print(f"  reward mean {r['reward_mean']:.3f}; rollouts without a reward: {r['rollouts_without_reward']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=None, help="answers per judge call (default: the whole group in one call)")
    parser.add_argument("--out", type=Path, default=RESULTS / "reward_latency.json", help="results file the run is appended to")
    parser.add_argument("--note", default="", help="what else ran on the machine, stated with the run")
    args = parser.parse_args()
    with (
        slow_endpoint(args.latency) as (base_url, stats),
        tempfile.TemporaryDirectory() as tmp,
        ResultCache(Path(tmp) / "cache.sqlite") as cache,
    ):
        machine = machine_state()
        record = asyncio.run(run(args, base_url, stats, cache))
    record = {"machine": machine, "note": args.note, **record}
    record["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report(record)
    append_run(args.out, record)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
