"""The rubric reward one step at a time: teacher answers, a rubric, the judge's verdicts, the scores.

    python examples/rubric_steps.py
    python examples/rubric_steps.py --teacher NAME --base-url URL   # any OpenAI-compatible server

What `ropd.RubricReward` does for each prompt group, called by hand on the first prompt of the examples' dataset
(examples/small.yaml) and three candidate answers (the
reference answer, a wrong one and an empty-handed one), printing each step's result as JSON. As written it runs
offline: ropd serves the packaged Qwen2.5-Coder-0.5B on loopback as teacher, rubricator and judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import ExitStack
from pathlib import Path

import ropd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="qwen2.5-coder-0.5b", help="Teacher, rubricator and judge model (default: %(default)s).")
    parser.add_argument("--base-url", help="OpenAI-compatible server of the teacher (default: ropd serves a local model itself).")
    parser.add_argument("--output-dir", default="runs/example-rubric-steps", help="Where the result cache goes (default: %(default)s).")
    return parser.parse_args(argv)


def show(step: str, value: object) -> None:
    print(json.dumps({"step": step, "result": value}, ensure_ascii=False))


async def score_one_prompt(reward: ropd.RubricReward, row: ropd.PromptRow, answers: list[str], judge: ropd.JudgeConfig) -> None:
    teacher_answers = await reward.teacher.answers(row)  # 1. k teacher answers (cached for good)
    show("teacher", teacher_answers)
    rubric = await ropd.induce_rubric(reward.rubric_client, row.question, teacher_answers, answers, judge)  # 2. a rubric
    show("rubric", rubric.model_dump(mode="json", exclude_none=True))
    verdicts = await ropd.judge_verdicts(reward.judge_client, row.question, rubric, answers, judge, seed="example")  # 3. verdicts
    show("judge", [v.model_dump(mode="json") for v in verdicts])
    scored = ropd.score_verdicts(rubric, verdicts, answers, teacher_answers, judge, row.question)  # 4. code checks, rewards
    show("score", {"rewards": scored.rewards, "decided_by": scored.decided_by})
    await reward.rubric_client.aclose()
    await reward.judge_client.aclose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = {"teacher.model": args.teacher, "teacher.base_url": args.base_url}
    config = ropd.load_config(Path(__file__).with_name("small.yaml"), {**overrides, "output.dir": args.output_dir})
    row = ropd.load_prompts(config.data.dataset)[0]
    answers = [f"The answer is {row.answer}.", "The answer is 7.", "I do not know."]
    with ExitStack() as stack:
        reward = ropd.rubric_reward(config, [row], stack=stack)
        asyncio.run(score_one_prompt(reward, row, answers, config.judge))
    usage = {role: u.model_dump(include={"requests", "prompt_tokens", "completion_tokens"}) for role, u in reward.usage_by_role().items()}
    show("usage", usage)


if __name__ == "__main__":
    main()
