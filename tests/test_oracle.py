"""The oracle reward (analysis only): criteria from the reference solution, decided by code, with controlled noise."""

import asyncio

import pytest
from pydantic import ValidationError

from ropd.config import RunConfig
from ropd.data import load_prompts
from ropd.reward.oracle import chain_partials, cot_results, flip, oracle_met, oracle_rubric, reference_steps
from ropd.reward.setup import build_rubric_reward
from ropd.types import PromptRow


def row(expression: str, answer: str) -> PromptRow:
    return PromptRow.model_validate(
        {
            "id": "p",
            "prompt": [{"role": "user", "content": f"{expression} ="}],
            "answer": answer,
            "task": "chain_sum",
            "metadata": {"expression": expression, "source_dataset": "chain_sum"},
        }
    )


def test_reference_steps_of_a_chain_and_of_a_worked_solution():
    assert chain_partials("38 - 69 - 67") == ["-31", "-98"]
    assert chain_partials("2 * 3 + 1") == []  # precedence matters: no left-to-right partials
    assert reference_steps(row("38 - 69 - 67", "-98")) == ["-31"]
    assert reference_steps(row("4 - 1", "3")) == []
    assert cot_results("So 35 × 3 = 105 kiwi. Total: 105 + 35 = 140.\n#### 140") == ["105", "140"]
    (gsm,) = load_prompts("reasoning-gym:gsm_symbolic?size=1&seed=1")
    steps = reference_steps(gsm)
    assert steps and gsm.answer not in steps and all(s.lstrip("-").replace(".", "").isdigit() for s in steps)


def test_the_oracle_rewards_the_final_result_most_and_each_intermediate_result():
    prompt = row("38 - 69 - 67", "-98")
    rubric = oracle_rubric(prompt)
    assert [(c.id, c.points) for c in rubric.criteria] == [("final", 5), ("step1", 1)]
    assert oracle_met(prompt, rubric, "38 - 69 = -31. -31 - 67 = -98. The answer is -98.") == [True, True]
    assert oracle_met(prompt, rubric, "38 - 69 = -31. -31 - 67 = -96. The answer is -96.") == [False, True]
    assert oracle_met(prompt, rubric, "The answer is 12.") == [False, False]
    with pytest.raises(ValueError, match="reference answer"):
        oracle_rubric(PromptRow.model_validate({"id": "q", "prompt": [{"role": "user", "content": "hi"}]}))


def test_noise_flips_each_boolean_at_its_rate_the_same_way_for_the_same_seed():
    met = [[True, False] * 50 for _ in range(100)]
    assert flip(met, 0.0, "s") == met
    noisy = flip(met, 0.2, "s")
    flipped = sum(a != b for row_a, row_b in zip(met, noisy, strict=True) for a, b in zip(row_a, row_b, strict=True))
    assert 0.17 < flipped / 10_000 < 0.23
    assert flip(met, 0.2, "s") == noisy and flip(met, 0.2, "other") != noisy


def test_the_oracle_is_refused_unless_asked_for():
    with pytest.raises(ValidationError, match="allow_oracle"):
        RunConfig.model_validate({"judge": {"model": "oracle"}})


def test_the_oracle_reward_ranks_right_above_wrong_without_any_model_call():
    config = RunConfig.model_validate(
        {
            "judge": {"model": "oracle", "allow_oracle": True},
            "teacher": {"model": "no-such-teacher", "base_url": "http://127.0.0.1:9/v1"},  # never called
            "training": {"num_generations": 3, "max_completion_length": 64},
        }
    )
    prompt = row("38 - 69 - 67", "-98")
    reward = build_rubric_reward(config, [prompt], cache=None)
    completions = ["38 - 69 = -31. -31 - 67 = -98. The answer is -98.", "38 - 69 = -31. So -96.", "I think 5."]
    rewards = asyncio.run(reward(prompts=["38 - 69 - 67 ="] * 3, completions=completions, id=["p"] * 3))
    assert rewards == pytest.approx([1.0, 1 / 6, 0.0])
    metrics = reward.metrics(reward.last_runs)
    assert metrics["quality/pairwise_acc"] == 1.0 and metrics["rubric/group_failure_rate"] == 0.0
    assert not reward.usage_by_role()  # no teacher, rubricator or judge
