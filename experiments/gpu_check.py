"""GPU check: bf16 training of every method on random-weight models of real architectures.

No weights are downloaded: the student has Qwen3-0.6B's architecture and the white-box teacher
Qwen3-1.7B's, both with random weights and the tokenizer found at --tokenizer (any Qwen2.5/Qwen3
tokenizer folder; its vocabulary fits their 151,936-row embeddings). The rubricator and judge are
a scripted OpenAI-compatible server on loopback (ropd.testing.judge_scripts reads the rendered prompt
the way a model would), so the check exercises ropd's real reward path over HTTP, TRL's trainer in
bf16 on the GPU, and logit OPD / SOD with a second model on the same GPU.

    python experiments/gpu_check.py --tokenizer ~/.cache/ropd/models/qwen2.5-coder-0.5b --out /tmp/gpu-check

Prints, per method, one JSON line: seconds per step by phase, peak GPU memory, the dtype the
student trained in, the logged reward and whether the weights moved. Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from ropd.config import load_config
from ropd.testing.judge_scripts import blocks, is_judge_request, rubric_json, user_text
from ropd.testing.scripted_server import ScriptedServer
from ropd.training.run import train

REPO = Path(__file__).resolve().parents[1]

# Published shapes (config.json of Qwen/Qwen3-0.6B and Qwen/Qwen3-1.7B); weights are random.
SHAPES = {
    "qwen3-0.6b-shape": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28),
    "qwen3-1.7b-shape": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28),
}
CRITERIA = [("states a final number", 3), ("shows the arithmetic", 2), ("is concise", 1), ("uses no other language", 1)]


def build_random_model(name: str, tokenizer_dir: Path, root: Path, seed: int) -> Path:
    """A random-weight model of a published Qwen3 shape, saved in bf16 with the tokenizer."""
    out = root / name
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen3Config(
        vocab_size=151936,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[name],
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_prompts(path: Path, count: int = 16, offset: int = 0) -> Path:
    """Arithmetic questions in TRL's conversational format, with reference answers (`offset` gives other numbers)."""
    rows = []
    for i in range(offset, offset + count):
        a, b = 17 + 3 * i, 5 + i
        question = f"A shop has {a} apples and buys {b} more. How many apples does it have now?"
        rows.append({"id": f"q{i}", "prompt": [{"role": "user", "content": question}], "answer": str(a + b)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scripted_judge(body: dict) -> str:
    """Rubric for a rubric request; for a judge request, each criterion decided by a plain-text rule."""
    text = user_text(body)
    if is_judge_request(body):
        verdicts = []
        for label, answer in blocks(text, "ANSWER").items():
            met = [any(c.isdigit() for c in answer), "+" in answer or "=" in answer, len(answer) < 200, answer.isascii()]
            verdicts.append({"answer": int(label), "met": met, "total": 0})
        return json.dumps({"verdicts": verdicts})
    if "<<<BEGIN REFERENCE" in text:
        return rubric_json(CRITERIA)
    return "17 + 5 = 22. The answer is 22."


def run_method(method: str, student: Path, teacher: Path, data: Path, out: Path, base_url: str) -> dict:
    """Train one method for a few steps on the GPU; return what the check reports."""
    values = {
        "method.name": method,
        "student.model": str(student),
        "data.dataset": str(data),
        "training.max_steps": 3,
        "training.prompts_per_step": 4,
        "training.num_generations": 4,
        "training.max_completion_length": 96,
        "training.learning_rate": 1e-5,
        "training.save_steps": 3,
        "output.dir": str(out / method),
    }
    if method == "ropd":
        values |= {"teacher.model": "scripted", "teacher.base_url": base_url, "teacher.num_answers": 2}
    else:
        values |= {"teacher.model": str(teacher), "method.sequence_reward": "outcome"}
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    final = train(load_config(overrides=values))
    seconds = time.perf_counter() - started
    steps = [json.loads(line) for line in (out / method / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "step" in s and "loss" in s]
    trained = Qwen3ForCausalLM.from_pretrained(final, dtype="auto")
    start = Qwen3ForCausalLM.from_pretrained(student, dtype="auto")
    moved = any(not torch.equal(p, q) for p, q in zip(start.parameters(), trained.parameters(), strict=True))
    phases = sorted({k for s in steps for k in s if k.startswith("time/")})
    return {
        "method": method,
        "device": torch.cuda.get_device_name(),
        "steps": len(steps),
        "seconds_total": round(seconds, 1),
        "seconds_per_step_by_phase": {k: round(sum(s.get(k, 0.0) for s in steps) / max(len(steps), 1), 3) for k in phases},
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "saved_dtype": str(next(trained.parameters()).dtype),
        "reward_by_step": [s.get("reward") for s in steps],
        "extra": {k: steps[-1][k] for k in steps[-1] if k.startswith(("opd/", "sod/"))} if steps else {},
        "weights_moved": moved,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="A Qwen2.5/Qwen3 tokenizer folder.")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="Working folder (models, runs).")
    parser.add_argument("--methods", default="ropd,opd,sod", help="Comma-separated methods to train.")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this check is for a GPU machine", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    student = build_random_model("qwen3-0.6b-shape", args.tokenizer, args.out, seed=0)
    teacher = build_random_model("qwen3-1.7b-shape", args.tokenizer, args.out, seed=1)
    data = write_prompts(args.out / "prompts.jsonl")
    failed = False
    with ScriptedServer(scripted_judge) as server:
        for method in args.methods.split(","):
            report = run_method(method, student, teacher, data, args.out, server.base_url)
            print(json.dumps(report), flush=True)
            ok = report["weights_moved"] and report["saved_dtype"] == "torch.bfloat16" and report["steps"] == 3
            failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
