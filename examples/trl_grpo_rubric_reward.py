"""ropd's rubric reward in a plain TRL script: GRPOTrainer with the rubric reward next to TRL's own reward functions.

    python examples/trl_grpo_rubric_reward.py
    python examples/trl_grpo_rubric_reward.py --teacher gpt-4o-mini          # an API teacher (key in OPENAI_API_KEY)
    python examples/trl_grpo_rubric_reward.py --teacher NAME --base-url URL  # any OpenAI-compatible server

As written it runs offline on the packaged models: the SmolLM2-135M student learns for 2 steps from the
Qwen2.5-Coder-0.5B teacher, which ropd serves on loopback with llama.cpp (it also writes the rubrics and judges).
The rubric reward is one of three reward functions TRL sums: TRL's overlong and repetition penalties shape length
and style, the rubric reward says how good each answer is. Everything but the reward is plain TRL.
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.rewards import get_repetition_penalty_reward, get_soft_overlong_punishment

import ropd

CONFIG = Path(__file__).with_name("small.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="qwen2.5-coder-0.5b", help="Teacher, rubricator and judge model (default: %(default)s).")
    parser.add_argument("--base-url", help="OpenAI-compatible server of the teacher (default: ropd serves a local model itself).")
    parser.add_argument("--student", default="smollm2-135m", help="Student model: alias, folder or Hub id (default: %(default)s).")
    parser.add_argument("--steps", type=int, default=2, help="Optimizer steps (default: %(default)s).")
    parser.add_argument("--max-completion-length", type=int, default=96, help="Tokens per rollout (default: %(default)s).")
    parser.add_argument("--output-dir", default="runs/example-trl-grpo", help="Checkpoints and the result cache (default: %(default)s).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The rubric reward's settings: a run config, as `ropd train` reads it (a YAML file, then dotted overrides).
    overrides = {"teacher.model": args.teacher, "teacher.base_url": args.base_url}
    overrides |= {"training.max_completion_length": args.max_completion_length, "output.dir": args.output_dir}
    config = ropd.load_config(CONFIG, overrides)
    prompts = ropd.load_prompts(config.data.dataset)
    dataset = ropd.to_dataset(prompts)  # TRL's conversational format: prompt, plus id and answer columns
    training = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        num_generations=config.training.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=1e-5,
        reward_weights=[1.0, 0.5, 0.5],  # rubric, overlong penalty, repetition penalty
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
    )
    with ExitStack() as stack:  # a local teacher is served until the block ends
        rubric = ropd.rubric_reward(config, prompts, stack=stack)
        trainer = GRPOTrainer(
            model=ropd.model_path(args.student),
            reward_funcs=[rubric, get_soft_overlong_punishment(args.max_completion_length, 16), get_repetition_penalty_reward(3, -0.5)],
            args=training,
            train_dataset=dataset,
        )
        trainer.train()
    usage = {role: u.model_dump(include={"requests", "prompt_tokens", "completion_tokens"}) for role, u in rubric.usage_by_role().items()}
    print(json.dumps({"steps": trainer.state.global_step, "groups_scored": rubric.groups_scored, "usage": usage}))


if __name__ == "__main__":
    main()
