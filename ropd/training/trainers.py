"""The trainer every method runs on, and the callbacks of a run.

`TimedGRPOTrainer` is TRL's GRPOTrainer with per-phase timing and no update on an empty learning signal;
the rubric and outcome methods (ropd, grpo) use it as it is, and the white-box trainers (ropd.training.opd: opd,
sod) subclass it. `StepLog` writes metrics.jsonl and a one-line summary per step; `FailureGuard` stops a
run whose API calls keep failing. `ropd.training.run` builds the trainer from a RunConfig and runs it.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback
from trl import GRPOTrainer

from ropd.config import TrainingConfig

console = Console(stderr=True)

CHECKPOINT_PREFIX = "checkpoint-"
ZERO_SPREAD_TOLERANCE = 1e-6  # rewards of a group closer than this are a tie: no advantage


# --- the trainer ----------------------------------------------------------------------------------


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that times each phase of a step and does not move the weights on an empty signal.

    - Timing: the seconds of sampling and reward go into the step's metrics (`time/sample`, `time/reward`).
    - Groups without reward spread: a prompt group whose rewards are all equal (within ZERO_SPREAD_TOLERANCE) or
      that got no reward at all (failed, None) gets an advantage of exactly 0. TRL leaves rounding noise there
      (reward minus a float mean), which AdamW's normalised update would turn into a full-size step. Their share
      of the step's groups is logged as `train/zero_variance_group_rate`.
    - Empty micro-batches: when no term of a micro-batch's loss has a gradient (`_has_learning_signal`), its
      forward and backward are skipped and the parameters' gradients stay None. AdamW skips parameters without a
      gradient (no momentum, no weight decay), so an optimizer step all of whose micro-batches were empty leaves
      the weights and the optimizer state byte-identical; it is logged as `train/skipped_update` = 1 (else 0).
      The learning-rate schedule still steps. Not done under DeepSpeed, whose engine owns the optimizer step.
    - Dynamic sampling (optional, DAPO): groups whose every advantage is zero are dropped from the loss mask, so
      they leave the token-mean normaliser; `train/dropped_group_rate` logs their share.
    - Model card: names `base_model` (the student it was trained from) where TRL, given a local folder, names none.
    """

    base_model: str | None = None  # what the student was fine-tuned from, for the model card (ropd.endpoints.models.base_model_name)

    def __init__(self, *args: Any, dynamic_sampling: bool = False, **kwargs: Any):
        self.dynamic_sampling = dynamic_sampling
        self._window_has_signal = False  # any micro-batch of the current optimizer step had a learning signal
        self._rewards_per_func = None  # the last generation batch's rewards, [completions of all processes, reward functions]
        super().__init__(*args, **kwargs)

    @contextmanager
    def _timed(self, name: str, mode: str = "train"):
        """Append the seconds the block took to the step's metric `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._metrics[mode][name].append(time.perf_counter() - start)

    def _generate(self, prompts: list):
        with self._timed("time/sample"):
            return super()._generate(prompts)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None):
        """TRL's model card, naming `base_model`: TRL reads it from the model's `_name_or_path`, and leaves it out when
        that is a local folder (every packaged, converted or random student)."""
        if self.base_model is None:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        config = self.model.config
        saved = getattr(config, "_name_or_path", "")
        config._name_or_path = self.base_model
        try:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        finally:
            config._name_or_path = saved

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self._timed("time/reward"):
            self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    # --- empty signal -------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        training = self.model.training
        num_generations = self.num_generations if training else self.num_generations_eval
        rewards_per_func, self._rewards_per_func = self._rewards_per_func, None  # this batch's rewards, used once
        if rewards_per_func is not None and num_generations > 1:
            empty = self._groups_without_spread(rewards_per_func, num_generations)
            local = self._local_rows(empty.repeat_interleave(num_generations), output["advantages"].size(0))
            output["advantages"] = output["advantages"].masked_fill(local.to(output["advantages"].device), 0.0)
            if training:
                self._metrics["train"]["train/zero_variance_group_rate"].append(empty.float().mean().item())
        output = self._shape_advantages(output)
        if training and self.dynamic_sampling:
            self._drop_empty_groups(output, num_generations)
        return output

    def _groups_without_spread(self, rewards_per_func, num_generations: int):
        """Bool per prompt group (all processes): its rewards are all equal within ZERO_SPREAD_TOLERANCE, or none was scored.

        Follows TRL's aggregation: the weighted sum of the reward functions ("sum_then_normalize"), or each function
        on its own ("normalize_then_sum": a group is empty only when every function is tied). NaN = no reward.
        """
        import torch

        weights = self.reward_weights.to(rewards_per_func.device)
        if self.multi_objective_aggregation == "sum_then_normalize":
            values = (rewards_per_func * weights).nansum(dim=1, keepdim=True)
            values[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        else:
            values = rewards_per_func
        grouped = values.view(-1, num_generations, values.size(1))
        scored = ~torch.isnan(grouped)
        high = grouped.masked_fill(~scored, -math.inf).amax(dim=1)
        low = grouped.masked_fill(~scored, math.inf).amin(dim=1)
        return (high - low <= ZERO_SPREAD_TOLERANCE).all(dim=1)  # a group with nothing scored gives -inf here: empty

    def _local_rows(self, global_rows, local_count: int):
        """This process's slice of a per-completion tensor over all processes (TRL's process order)."""
        start = self.accelerator.process_index * local_count
        return global_rows[start : start + local_count]

    def _shape_advantages(self, output: dict[str, Any]) -> dict[str, Any]:
        """Hook for subclasses that change the advantages after the empty groups are zeroed (SOD's per-token term)."""
        return output

    def _loss_mask(self, inputs: dict[str, Any]):
        mask = inputs["completion_mask"]
        return mask * inputs["tool_mask"] if "tool_mask" in inputs else mask

    def _row_signal(self, inputs: dict[str, Any]):
        """Bool per completion: it puts a nonzero advantage on at least one token the loss counts."""
        mask = self._loss_mask(inputs).bool()
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            return (advantages != 0) & mask.any(dim=1)
        return ((advantages != 0) & mask).any(dim=1)

    def _has_learning_signal(self, inputs: dict[str, Any]) -> bool:
        """Whether any term of this micro-batch's loss has a gradient, on any process.

        Policy-gradient terms need a nonzero advantage on a counted token; a KL penalty to a reference model
        (beta > 0) or an entropy bonus is a term of its own, so with either the micro-batch is never empty.
        """
        if self.beta != 0.0 or getattr(self, "_entropy_bonus_enabled", False):
            return True
        local = self._row_signal(inputs).any().reshape(1)
        if self.accelerator.num_processes > 1:  # every process must skip or run the backward together
            return bool(self.accelerator.gather(local.int()).any())
        return bool(local.item())

    def _drop_empty_groups(self, output: dict[str, Any], num_generations: int) -> None:
        """Dynamic sampling: groups with no signal on any completion leave the loss mask and the token count."""
        rows = self._row_signal(output)
        keep_groups = self.accelerator.gather(rows.int()).view(-1, num_generations).any(dim=1)
        keep = self._local_rows(keep_groups.repeat_interleave(num_generations), rows.size(0)).to(rows.device)
        completion_mask = output["completion_mask"]
        row_mask = keep[:, None].to(completion_mask.dtype).expand_as(completion_mask)
        output["tool_mask"] = output["tool_mask"] * row_mask if "tool_mask" in output else row_mask.clone()
        output["num_items_in_batch"] = self.accelerator.gather((completion_mask * output["tool_mask"]).sum()).sum()
        self._metrics["train"]["train/dropped_group_rate"].append(1.0 - keep_groups.float().mean().item())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss, except that a training micro-batch without learning signal runs no forward and no backward."""
        if not self.model.training or self.is_deepspeed_enabled:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        import torch

        has_signal = self._has_learning_signal(inputs)
        self._window_has_signal = self._window_has_signal or has_signal
        if self.accelerator.sync_gradients:  # the last micro-batch of this optimizer step
            self._metrics["train"]["train/skipped_update"].append(0.0 if self._window_has_signal else 1.0)
            self._window_has_signal = False
        if has_signal:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        # A leaf outside the model: its backward reaches no parameter, so their gradients stay None.
        return torch.zeros((), device=self.accelerator.device, requires_grad=True)


class StepLog(TrainerCallback):
    """Writes every log to metrics.jsonl and prints a one-line summary per step on stderr."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        logs = dict(logs)
        if "step_time" in logs:
            spent = sum(logs.get(k) or 0.0 for k in ("time/sample", "time/reward", "time/teacher_logits"))
            logs["time/update"] = max(0.0, logs["step_time"] - spent)
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if _finite(v)}}
        with self.path.open("a") as sink:
            sink.write(json.dumps(record) + "\n")
        if "loss" in logs or "reward" in logs:
            console.print(step_summary(record), highlight=False)


class FailureGuard(TrainerCallback):
    """Stops a run whose API calls keep failing, after saving a checkpoint to resume from.

    A step fails when more than `max_failed_group_rate` of its prompt groups got no reward; after
    `max_failed_steps` failed steps in a row the run stops and `error` says what failed (phase,
    prompt, last error message: API errors never carry the key).
    """

    def __init__(self, rewards: list, settings: TrainingConfig, output_dir: Path):
        self.rewards = [r for r in rewards if hasattr(r, "groups_failed")]
        self.max_rate = settings.max_failed_group_rate
        self.max_steps = settings.max_failed_steps
        self.output_dir = output_dir
        self.failed_in_a_row = 0
        self.error: str | None = None
        self._seen = (0, 0)

    def on_step_end(self, args, state, control, **kwargs):
        scored = sum(r.groups_scored for r in self.rewards)
        failed = sum(r.groups_failed for r in self.rewards)
        new_scored, new_failed = scored - self._seen[0], failed - self._seen[1]
        self._seen = (scored, failed)
        if not new_scored:  # no reward was computed in this step
            return
        self.failed_in_a_row = self.failed_in_a_row + 1 if new_failed / new_scored > self.max_rate else 0
        if self.failed_in_a_row >= self.max_steps:
            control.should_save = True
            control.should_training_stop = True
            self.error = self._message(state.global_step)

    def _message(self, step: int) -> str:
        last = next((r.last_failure for r in reversed(self.rewards) if r.last_failure is not None), None)
        cause = f"last failure: prompt '{last.prompt_id}', {last.error}" if last is not None else "no failure recorded"
        return (
            f"training stopped at step {step}: more than {self.max_rate:.0%} of the prompt groups got no reward in each of the "
            f"last {self.failed_in_a_row} steps (training.max_failed_group_rate, training.max_failed_steps); {cause}. "
            f"The run is saved in {self.output_dir / f'{CHECKPOINT_PREFIX}{step}'}: fix the cause, then rerun with --resume."
        )


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def step_summary(record: dict[str, Any]) -> str:
    """One line: reward, failed groups, phase times, tokens and cost by role."""
    parts = [f"step {record['step']}"]
    if (reward := record.get("reward")) is not None:
        parts.append(f"reward {reward:.3f}")
    if (failed := record.get("rubric/group_failure_rate")) is not None:
        parts.append(f"failed groups {failed:.0%}")
    if (tied := record.get("train/zero_variance_group_rate")) is not None:
        parts.append(f"groups without spread {tied:.0%}")
    if record.get("train/skipped_update") == 1.0:
        parts.append("no signal: update skipped")
    times = [
        f"{name} {record[f'time/{name}']:.1f}s"
        for name in ("sample", "teacher", "teacher_logits", "rubric", "judge", "update")
        if f"time/{name}" in record
    ]
    if times:
        parts.append("time " + " ".join(times))
    for role in ("teacher", "rubricator", "judge"):
        tokens = record.get(f"{role}/tokens")
        if tokens:
            cost = record.get(f"{role}/cost_usd")
            parts.append(f"{role} {int(tokens)} tok " + (f"${cost:.4f}" if cost is not None else "cost unknown"))
    return " | ".join(parts)
