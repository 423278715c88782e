"""Training does not drift on empty signal: steps whose groups have no reward spread leave the weights byte-identical.

Short CPU runs of the tiny random student (a few tokens per rollout). Each run records the full state_dict after
every optimizer step, so a test can tell exactly which steps moved the weights. Weight decay is on, as in the
default config: without the skip, AdamW would still move every weight on a step whose gradients are zero.
"""

import itertools
import json
from collections.abc import Callable

import pytest
import torch
from transformers import TrainerCallback

from ropd.config import load_config
from ropd.data import load_prompts, to_dataset
from ropd.endpoints.models import load_model, load_tokenizer
from ropd.training.run import build_trainer, grpo_args, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DATASET = "reasoning-gym:gsm_symbolic?size=8&seed=0"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def dataset():
    return to_dataset(load_prompts(DATASET))


def scheduled_reward(schedule: list[str]) -> Callable:
    """A reward function whose n-th call (one per rollout batch) gives spread, a tie, or no reward at all."""
    calls = []

    def scheduled(completion_ids, **_):
        kind = schedule[min(len(calls), len(schedule) - 1)]
        calls.append(kind)
        if kind == "spread":  # groups of 2: (0, 1), (2, 0), ... every group has spread
            return [float(i % 3) for i in range(len(completion_ids))]
        if kind == "tied":  # in groups of 8, TRL's float32 advantages of 0.7 - mean are 6e-8, not 0
            return [0.7] * len(completion_ids)
        return [None] * len(completion_ids)  # every group failed

    scheduled.calls = calls
    return scheduled


class Snapshots(TrainerCallback):
    """A copy of the model's state_dict before training and after every optimizer step."""

    def __init__(self, model):
        self.model = model
        self.states = [self._copy()]

    def _copy(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}

    def on_step_end(self, args, state, control, **kwargs):
        self.states.append(self._copy())


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def run_config(tmp_path, **overrides):
    values = {
        "method.name": "grpo",
        "student.model": "tiny-random",
        "teacher.model": "tiny-random-teacher",
        "data.dataset": DATASET,
        "training.max_steps": 2,
        "training.prompts_per_step": 2,
        "training.num_generations": 2,
        "training.per_device_train_batch_size": 2,  # 4 completions per batch: 2 accumulated micro-batches per update
        "training.max_completion_length": 6,
        "training.truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
        "training.learning_rate": 1e-3,
        "training.weight_decay": 0.1,
        "training.save_steps": 1000,
        "output.dir": str(tmp_path / "run"),
        **overrides,
    }
    return load_config(overrides=values)


def train_with(config, tokenizer, dataset, reward: Callable) -> tuple[Snapshots, list[dict]]:
    """Train `config` with one reward function; return the snapshots and the per-step logs."""
    model = load_model("tiny-random")
    teacher = load_model("tiny-random-teacher") if config.method.name in ("opd", "sod") else None
    trainer = build_trainer(config, model, tokenizer, dataset, [reward], teacher)
    snapshots = Snapshots(model)
    trainer.add_callback(snapshots)
    trainer.train()
    return snapshots, [h for h in trainer.state.log_history if "loss" in h]


def test_updates_per_batch_and_dynamic_sampling_reach_the_trainer_config(tmp_path):
    default = grpo_args(run_config(tmp_path))
    assert default.num_iterations == 1 and default.gradient_accumulation_steps == 2
    args = grpo_args(run_config(tmp_path, **{"training.updates_per_batch": 4}))
    assert args.num_iterations == 4
    assert args.steps_per_generation == args.gradient_accumulation_steps == 2  # one rollout batch per update window
    assert run_config(tmp_path).training.dynamic_sampling is False
    assert run_config(tmp_path, **{"training.dynamic_sampling": True}).training.dynamic_sampling is True


@pytest.mark.parametrize(("empty", "generations"), [("tied", 2), ("failed", 2), ("tied", 8)])
def test_a_step_without_reward_spread_leaves_every_weight_byte_identical(tmp_path, tokenizer, dataset, empty, generations):
    reward = scheduled_reward(["spread", empty])
    config = run_config(tmp_path, **{"training.num_generations": generations, "training.per_device_train_batch_size": generations})
    snapshots, logs = train_with(config, tokenizer, dataset, reward)
    start, after_spread, after_empty = snapshots.states
    assert not identical(start, after_spread)  # the step with spread trained (and built up AdamW momentum)
    assert identical(after_spread, after_empty)  # the empty step moved nothing: no momentum, no weight decay
    assert [entry["train/skipped_update"] for entry in logs] == [0.0, 1.0]
    assert [entry["train/zero_variance_group_rate"] for entry in logs] == [0.0, 1.0]


def test_several_updates_per_batch_reuse_the_rollouts_and_skip_an_empty_batch(tmp_path, tokenizer, dataset):
    reward = scheduled_reward(["spread", "tied"])
    config = run_config(tmp_path, **{"training.max_steps": 4, "training.updates_per_batch": 2})
    snapshots, logs = train_with(config, tokenizer, dataset, reward)
    assert reward.calls == ["spread", "tied"]  # 4 updates from 2 rollout batches
    states = snapshots.states
    assert not identical(states[0], states[1]) and not identical(states[1], states[2])  # both updates on batch 1
    assert identical(states[2], states[3]) and identical(states[3], states[4])  # neither update on batch 2
    assert [entry["train/skipped_update"] for entry in logs] == [0.0, 0.0, 1.0, 1.0]


def test_the_ratio_clip_acts_only_from_the_second_update_on_a_batch(tmp_path, tokenizer, dataset):
    config = run_config(tmp_path, **{"training.max_steps": 2, "training.updates_per_batch": 2, "training.learning_rate": 1e-2})
    _, logs = train_with(config, tokenizer, dataset, scheduled_reward(["spread"]))
    first, second = (entry["clip_ratio/region_mean"] for entry in logs)
    assert first == 0.0  # fresh rollouts: the ratio is exactly 1, so one update per batch never clips
    assert second > 0.0  # the same rollouts after one update: the policy moved and the clip acts


@pytest.mark.parametrize(
    ("method", "sod_coef", "moves"),
    [("sod", 0.0, False), ("sod", 1.0, True), ("opd", 1.0, True)],
    ids=["sod-without-teacher-term", "sod", "opd"],
)
def test_white_box_methods_skip_only_when_the_teacher_term_is_empty_too(tmp_path, tokenizer, dataset, method, sod_coef, moves):
    overrides = {"method.name": method, "method.sod_coef": sod_coef, "training.max_steps": 2, "training.updates_per_batch": 2}
    reward = scheduled_reward(["tied"])
    snapshots, logs = train_with(run_config(tmp_path, **overrides), tokenizer, dataset, reward)
    assert len(reward.calls) == 1  # one rollout batch, two updates
    states = snapshots.states
    assert [identical(before, after) for before, after in itertools.pairwise(states)] == [not moves, not moves]
    assert [entry["train/skipped_update"] for entry in logs] == [0.0 if moves else 1.0] * 2
    assert logs[0]["train/zero_variance_group_rate"] == 1.0


def test_dynamic_sampling_drops_groups_without_spread_from_the_loss_and_the_token_count(tmp_path, tokenizer, dataset):
    def half_tied(completion_ids, **_):  # group 0 tied, group 1 with spread
        return [0.5, 0.5, 0.0, 1.0]

    config = run_config(tmp_path, **{"training.dynamic_sampling": True})
    trainer = build_trainer(config, load_model("tiny-random"), tokenizer, dataset, [half_tied])
    trainer.model.train()
    output = trainer._generate_and_score_completions([dataset[0], dataset[0], dataset[1], dataset[1]])
    mask = output["completion_mask"]
    assert output["advantages"].tolist() == [0.0, 0.0, -0.5, 0.5]
    assert output["tool_mask"][:2].sum() == 0 and torch.equal(output["tool_mask"][2:], torch.ones_like(mask[2:]))
    assert output["num_items_in_batch"].item() == mask[2:].sum().item()  # the token-mean normaliser counts group 1 only
    assert trainer._metrics["train"]["train/dropped_group_rate"] == [0.5]

    plain = build_trainer(run_config(tmp_path), load_model("tiny-random"), tokenizer, dataset, [half_tied])
    plain.model.train()
    output = plain._generate_and_score_completions([dataset[0], dataset[0], dataset[1], dataset[1]])
    assert "tool_mask" not in output and output["num_items_in_batch"].item() == output["completion_mask"].sum().item()


def test_train_logs_skipped_updates_and_the_zero_variance_rate_in_metrics_jsonl(tmp_path):
    # The random student never reaches a reference answer: every outcome reward is 0, so no group has spread.
    config = run_config(tmp_path, **{"training.max_steps": 1})
    final = train(config)
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert record["train/zero_variance_group_rate"] == 1.0 and record["train/skipped_update"] == 1.0
    assert identical(load_model("tiny-random").state_dict(), load_model(str(final)).state_dict())
