"""GPU check of `ropd bench`: experiments/bench-gpu.yaml end to end, shrunk, on random-weight models.

The GPU-scale bench config is run as written (optimizer, dtype, `use_vllm: auto`, all four methods),
with only what cannot travel to an offline GPU machine replaced: the student and the white-box
teacher are random-weight models of Qwen3-0.6B's and Qwen3-1.7B's architectures (built by
gpu_check.py), the prompts are a small arithmetic JSONL, the rubricator/judge is gpu_check.py's
scripted server on loopback, and the budget is 2 steps of 4 prompts x 4 rollouts. Rubric OPD's
teacher is served by `ropd serve` on the GPU, as a user without a vLLM server would run it.

    python experiments/gpu_bench_check.py --tokenizer PATH_TO_A_QWEN_TOKENIZER --out /tmp/gpu-bench

Accuracies of random models mean nothing; the check is that every arm trains, is evaluated at
every point of its curve, and that results.json, results.md and curves.png are written. Prints one
JSON line per arm and exits 1 if any of that is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from gpu_check import REPO, build_random_model, scripted_judge, write_prompts

from ropd.testing.scripted_server import ScriptedServer

STEPS, PROMPTS_PER_STEP, GENERATIONS = 2, 4, 4


def shrunk_config(student: Path, teacher: Path, train: Path, held_out: Path, judge_url: str, out: Path) -> dict:
    """bench-gpu.yaml with the models, prompts, judge and budget replaced; every other setting kept."""
    config = yaml.safe_load((REPO / "experiments" / "bench-gpu.yaml").read_text())
    base = config["base"]
    base["teacher"] |= {"model": str(teacher), "num_answers": 2, "max_tokens": 64}
    base["judge"] |= {"base_url": judge_url, "max_tokens": 512}
    base["student"]["model"] = str(student)
    base["data"]["dataset"] = str(train)
    base["training"] |= {
        "max_steps": STEPS,
        "prompts_per_step": PROMPTS_PER_STEP,
        "num_generations": GENERATIONS,
        "per_device_train_batch_size": PROMPTS_PER_STEP * GENERATIONS,
        "max_completion_length": 64,
        "save_steps": STEPS,
    }
    config |= {
        "judge": "scripted",
        "seeds": [0],
        "eval": {**config["eval"], "dataset": str(held_out), "max_new_tokens": 64, "batch_size": 16},
        "eval_every": PROMPTS_PER_STEP * GENERATIONS,
        "output_dir": str(out / "bench"),
    }
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="A Qwen2.5/Qwen3 tokenizer folder.")
    parser.add_argument("--out", type=Path, default=Path("gpu-bench-check"), help="Working folder (models, bench output).")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this check is for a GPU machine", file=sys.stderr)
        return 1
    return run_check(args.tokenizer, args.out)


def run_check(tokenizer: Path, out: Path) -> int:
    """Build the models and prompts, run the shrunk bench, print one line per arm; 1 if something is missing."""
    out.mkdir(parents=True, exist_ok=True)
    student = build_random_model("qwen3-0.6b-shape", tokenizer, out, seed=0)
    teacher = build_random_model("qwen3-1.7b-shape", tokenizer, out, seed=1)
    train = write_prompts(out / "train.jsonl", count=16)
    held_out = write_prompts(out / "held_out.jsonl", count=16, offset=100)
    with ScriptedServer(scripted_judge) as server:
        config = shrunk_config(student, teacher, train, held_out, server.base_url, out)
        config_path = out / "bench.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "ropd.cli", "bench", "--config", str(config_path)], cwd=REPO)
    bench_dir = out / "bench"
    written = {name: (bench_dir / name).is_file() for name in ("results.json", "results.md", "curves.png")}
    if done.returncode or not written["results.json"]:
        print(json.dumps({"bench_exit_code": done.returncode, "written": written}))
        return 1
    results = json.loads((bench_dir / "results.json").read_text())
    failed = not all(written.values())
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    for arm in results["arms"]:
        samples = [point["samples"] for point in arm["curve"]]
        complete = samples == [i * PROMPTS_PER_STEP * GENERATIONS for i in range(STEPS + 1)]
        failed |= not complete
        print(
            json.dumps(
                {
                    "device": device,
                    "method": arm["method"],
                    "curve_samples": samples,
                    "curve_accuracy": [point["accuracy"] for point in arm["curve"]],
                    "wall_seconds": round(arm["wall_seconds"], 1),
                    "complete": complete,
                    "written": written,
                }
            ),
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
