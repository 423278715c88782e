"""Local serving speed: llama.cpp's llama-server against the hand-written server ropd used before it.

Same machine, same model (the packaged Qwen2.5-Coder-1.5B), same requests, one engine at a time:

- judge: a judge-sized request (the verifier template over 8 answers of a labelled GSM-style item,
  JSON-schema-constrained verdicts with evidence fields, temperature 0), each prompt new to the
  server (a unique first line). Prompt speed comes from the same request cut to 1 output token.
- teacher: a teacher answer (a GSM-style question, up to 300 tokens, temperature 0.7, seeded).
- prefix: two judge chunks that share system prompt, question and rubric (chunked judging): the
  second one's time, against the same request sent cold.
- agreement: the judge's booleans from the two engines on the same requests.

The old server is run from a checkout of the commit before the engine change:

    git worktree add /tmp/ropd-old 44362b1
    OMP_NUM_THREADS=2 .venv/bin/python experiments/bench_engines.py --old-tree /tmp/ropd-old \
        --out experiments/results/engines.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import openai

from ropd.config import JudgeConfig
from ropd.endpoints.models import local_path
from ropd.endpoints.serve import _stop, _wait_until_healthy, free_port, local_server
from ropd.reward.judge import verdict_schema, verifier_messages
from ropd.types import Criterion, Rubric

MODEL = "qwen2.5-coder-1.5b"
LABELLED = Path(__file__).parent / "data" / "judge_eval_gsm_symbolic_s1.json"
RUBRIC = Rubric(
    criteria=[
        Criterion(id="c1", category="correctness", text="The final answer is the value the question asks for.", points=5),
        Criterion(id="c2", category="reasoning", text="Each arithmetic step is computed correctly.", points=3),
        Criterion(id="c3", category="reasoning", text="The answer uses every quantity the question gives.", points=2),
        Criterion(id="c4", category="clarity", text="The answer states its final result clearly at the end.", points=1),
    ]
)


def judge_requests(count: int, answers_per_call: int = 8) -> list[dict]:
    """Judge-sized requests over the labelled items: question, 4 criteria, `answers_per_call` answers."""
    items = json.loads(LABELLED.read_text())["items"]
    cfg = JudgeConfig(expected_evidence=True)
    requests = []
    for index, item in enumerate(items[:count]):
        texts = [c["text"] for c in item["candidates"]]
        answers = (texts * answers_per_call)[:answers_per_call]
        messages, _ = verifier_messages(item["question"], RUBRIC, answers, cfg)
        schema = verdict_schema(len(answers), len(RUBRIC.criteria), expected=True)
        requests.append({"id": item["id"], "messages": messages, "schema": schema, "n_answers": len(answers), "index": index})
    return requests


def made_new(messages: list[dict], tag: str) -> list[dict]:
    """The same request with a unique first line, so no engine can reuse a cached prompt prefix."""
    first = dict(messages[0])
    first["content"] = f"[request {tag}]\n" + first["content"]
    return [first, *messages[1:]]


def call(client: openai.OpenAI, messages: list[dict], *, max_tokens: int, temperature: float, schema: dict | None = None, seed=None):
    extra: dict = {}
    if schema is not None:
        extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdicts", "schema": schema, "strict": False}}
    if seed is not None:
        extra["seed"] = seed
    started = time.perf_counter()
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=temperature, **extra)
    seconds = time.perf_counter() - started
    usage = response.usage
    return {
        "seconds": round(seconds, 2),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "text": response.choices[0].message.content,
        "finish_reason": response.choices[0].finish_reason,
    }


def measure(url: str, engine: str, judges: list[dict], teacher_questions: list[str], judge_max_tokens: int) -> dict:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=1800)
    nonce = f"{engine}-{random.randrange(1 << 30)}"
    out: dict = {"engine": engine, "judge": [], "teacher": [], "prefix": {}}
    for request in judges:
        tag = f"{nonce}-{request['index']}"
        prefill = call(client, made_new(request["messages"], tag + "-p"), max_tokens=1, temperature=0.0)
        full = call(client, made_new(request["messages"], tag), max_tokens=judge_max_tokens, temperature=0.0, schema=request["schema"])
        full["prefill_seconds"] = prefill["seconds"]
        full["prompt_tps"] = round(prefill["prompt_tokens"] / prefill["seconds"], 1)
        decode = max(full["seconds"] - prefill["seconds"], 1e-6)
        full["output_tps"] = round(full["completion_tokens"] / decode, 2)
        out["judge"].append(full)
        print(engine, "judge", {k: v for k, v in full.items() if k != "text"}, file=sys.stderr, flush=True)
    for index, question in enumerate(teacher_questions):
        messages = [{"role": "user", "content": f"[{nonce}-t{index}] {question}"}]
        answer = call(client, messages, max_tokens=300, temperature=0.7, seed=index)
        answer["output_tps"] = round(answer["completion_tokens"] / answer["seconds"], 2)
        out["teacher"].append(answer)
        print(engine, "teacher", {k: v for k, v in answer.items() if k != "text"}, file=sys.stderr, flush=True)
    # chunked judging: two chunks of 4 answers under the same system prompt, question and rubric
    item = json.loads(LABELLED.read_text())["items"][0]
    texts = [c["text"] for c in item["candidates"]]
    cfg = JudgeConfig(expected_evidence=True)
    chunks = [verifier_messages(item["question"], RUBRIC, (texts * 4)[start : start + 4], cfg)[0] for start in (0, 4)]
    schema = verdict_schema(4, len(RUBRIC.criteria), expected=True)
    first = call(client, made_new(chunks[0], nonce + "-c"), max_tokens=judge_max_tokens, temperature=0.0, schema=schema)
    second = call(client, made_new(chunks[1], nonce + "-c"), max_tokens=judge_max_tokens, temperature=0.0, schema=schema)
    cold = call(client, made_new(chunks[1], nonce + "-cold"), max_tokens=judge_max_tokens, temperature=0.0, schema=schema)
    out["prefix"] = {"first_chunk": first, "second_chunk_shared_prefix": second, "second_chunk_cold": cold}
    print(engine, "prefix", first["seconds"], second["seconds"], cold["seconds"], file=sys.stderr, flush=True)
    return out


@contextmanager
def old_server(tree: Path, threads: int, log_path: Path):
    """The hand-written server of the commit before the engine change, int8 weights, as its demo ran it."""
    port = free_port()
    path = local_path(MODEL)  # safetensors, converted once
    command = [sys.executable, "-m", "ropd.cli", "serve", path, "--served-name", MODEL, "--port", str(port)]
    command += ["--dtype", "int8", "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(tree), start_new_session=True)
    try:
        _wait_until_healthy(process, f"http://127.0.0.1:{port}", 900, log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(process)


def verdict_booleans(text: str) -> list[list[bool]] | None:
    try:
        verdicts = sorted(json.loads(text)["verdicts"], key=lambda v: v["answer"])
        return [list(v["met"]) for v in verdicts]
    except (ValueError, KeyError, TypeError):
        return None


def agreement(a: list[dict], b: list[dict]) -> dict:
    same = total = unparsed = 0
    for x, y in zip(a, b, strict=True):
        bx, by = verdict_booleans(x["text"]), verdict_booleans(y["text"])
        if bx is None or by is None or len(bx) != len(by):
            unparsed += 1
            continue
        for row_x, row_y in zip(bx, by, strict=True):
            for p, q in zip(row_x, row_y, strict=False):
                same += p == q
                total += 1
    return {"booleans_compared": total, "agreeing": same, "rate": round(same / total, 3) if total else None, "requests_unparsed": unparsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-tree", type=Path, help="A checkout with the old hand-written server; unset: measure llama.cpp only.")
    parser.add_argument("--judge-calls", type=int, default=3)
    parser.add_argument("--teacher-calls", type=int, default=3)
    parser.add_argument("--judge-max-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/engines.json"))
    args = parser.parse_args()
    judges = judge_requests(args.judge_calls)
    items = json.loads(LABELLED.read_text())["items"]
    questions = [item["question"] for item in items[-args.teacher_calls :]]
    logs = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    results = {
        "model": MODEL,
        "threads": args.threads,
        "load_average_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "runs": [],
    }
    started = time.perf_counter()
    with local_server(MODEL, threads=args.threads, log_path=logs / "llama.log") as url:
        results["runs"].append(measure(url, "llama.cpp", judges, questions, args.judge_max_tokens))
    if args.old_tree:
        with old_server(args.old_tree, args.threads, logs / "old.log") as url:
            results["runs"].append(measure(url, "ropd-serve-int8", judges, questions, args.judge_max_tokens))
        new, old = results["runs"]
        results["agreement"] = agreement(new["judge"], old["judge"])
        results["ratios"] = summary_ratios(new, old)
    results["load_average_at_end"] = os.getloadavg()
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summary_ratios(new: dict, old: dict) -> dict:
    """Old engine's time / llama.cpp's (above 1: llama.cpp is faster), and the means they come from."""

    def stat(run: dict, part: str, key: str) -> float:
        return round(_mean([r[key] for r in run[part]]), 2)

    out = {}
    measured = [("judge", "seconds"), ("teacher", "seconds"), ("judge", "prompt_tps"), ("judge", "output_tps"), ("teacher", "output_tps")]
    for part, key in measured:
        out[f"{part}_{key}"] = {"llama.cpp": stat(new, part, key), "ropd-serve-int8": stat(old, part, key)}
    out["judge_speedup"] = round(out["judge_seconds"]["ropd-serve-int8"] / out["judge_seconds"]["llama.cpp"], 2)

    # teacher answers differ in length between engines: compare time per output token
    def per_token(run: dict) -> float:
        return _mean([r["seconds"] / max(r["completion_tokens"], 1) for r in run["teacher"]])

    out["teacher_speedup"] = round(per_token(old) / per_token(new), 2)
    return out


if __name__ == "__main__":
    main()
