"""One process of a two-process `ropd train` whose prompt groups TRL splits across the processes (run by accelerate).

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 tests/distributed_groups.py --base-url URL --out DIR

Each optimizer step samples one prompt x 4 rollouts, and each process gets 2 of them: per-device batches of 2 with
one micro-batch per step (gradient accumulation forced to 1 here; `ropd train`'s own settings keep groups whole).
Every call of the rubric reward is recorded to DIR/rank<N>.json: the rewards this process returned for its rollouts
and every group's rewards as this process saw them.

With --fail-rank N, process N's teacher answers raise (as a broken cache would) when it scores its first group; each
process that stops writes DIR/rank<N>.error.json: the error it stopped with and when (seconds since the epoch).
With --local-teacher the teacher is a local model that ropd serves with llama.cpp (the rubricator and judge stay
scripted), and every process records, per step, the llama-server processes the launch runs to DIR/rank<N>.servers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import trl
from transformers import TrainerCallback

import ropd.training.run as training
from ropd.config import load_config
from ropd.reward.rubric_reward import RubricReward
from ropd.reward.teacher import TeacherPool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--local-teacher", action="store_true", help="the tiny random teacher, served by ropd on loopback")
    args = parser.parse_args()
    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))  # torchrun's; accelerate's state must first be made by the trainer
    if args.fail_rank == rank:
        TeacherPool.answers = broken_answers(out / "injected.json")  # type: ignore[method-assign]
    calls: list[dict] = []
    score = RubricReward.__call__

    async def recorded(self, *a, **kw):
        rewards = await score(self, *a, **kw)
        calls.append(
            {
                "local": rewards,
                "groups": [{"prompt_id": g.prompt_id, "rewards": g.rewards} for g in self.last_group_scores],
                "indices": [run.indices for run in self.last_runs],
            }
        )
        return rewards

    RubricReward.__call__ = recorded  # type: ignore[method-assign]
    # One micro-batch per optimizer step, so each process's generation batch is its 2 rollouts: half a group.
    training.GRPOConfig = lambda **kw: trl.GRPOConfig(**{**kw, "gradient_accumulation_steps": 1})  # type: ignore[misc]
    scripted_teacher = {"teacher.model": "scripted", "teacher.base_url": args.base_url}
    local_teacher = {"teacher.model": "tiny-random-teacher", "teacher.max_tokens": 16, "teacher.use_truncated": True}
    judge = {"judge.model": "scripted", "judge.base_url": args.base_url}
    config = load_config(
        overrides={
            **(local_teacher | judge if args.local_teacher else scripted_teacher),
            "teacher.num_answers": 2,
            "teacher.max_retries": 1,
            "judge.max_retries": 1,
            "student.model": "tiny-random",
            "data.dataset": "reasoning-gym:gsm_symbolic?size=4&seed=0",
            "training.max_steps": 2,
            "training.prompts_per_step": 1,
            "training.num_generations": 4,
            "training.per_device_train_batch_size": 2,
            "training.max_completion_length": 8,
            "training.truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
            "training.learning_rate": 1e-3,
            "training.save_steps": 100,
            "output.dir": str(out / "run"),
        }
    )
    try:
        training.train(config, callbacks=[ServerCount(out / f"rank{rank}.servers.json")])
    except Exception as exc:
        (out / f"rank{rank}.error.json").write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}", "at": time.time()}))
        raise
    (out / f"rank{rank}.json").write_text(json.dumps(calls))


class ServerCount(TrainerCallback):
    """Records, at every step, how many llama-server processes the processes of this launch have started."""

    def __init__(self, path: Path):
        self.path, self.counts = path, []

    def on_step_end(self, args, state, control, **kwargs):
        self.counts.append(launch_servers())
        self.path.write_text(json.dumps(self.counts))


def launch_servers() -> int:
    """llama-server processes whose parent is a process of this launch (a child of this process's launcher)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    launch = {pid for pid, parent in parents.items() if parent == os.getppid()}
    return sum(parents[pid] in launch and "llama-server" in command for pid, command in commands.items())


def broken_answers(record: Path):
    """TeacherPool.answers that raises, noting when it did."""

    async def answers(self, row):
        record.write_text(json.dumps({"at": time.time()}))
        raise RuntimeError("injected: the teacher answer cache cannot be read")

    return answers


if __name__ == "__main__":
    main()
