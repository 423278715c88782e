"""Each step's rubric groups in the trackers of training.report_to, as a table a person can read.

After every step that scored groups, `GroupTables` samples `training.log_groups` of them (seeded by the run's
seed and the step) and logs one row per group: step, prompt id, question, rubric (points and text per
criterion), rewards, correctness of each rollout where the prompt has a reference answer, and the error of a
group that got no reward. wandb and trackio get a table (`rubric_groups`); tensorboard, which has no tables,
gets the same rows as a markdown table in its text tab. Trackers not in report_to, or whose run is not open,
are left alone.
"""

from __future__ import annotations

import random
from typing import Any

from transformers import TrainerCallback

from ropd.reward.groups import GroupRun

TABLE_KEY = "rubric_groups"
COLUMNS = ("step", "prompt_id", "question", "rubric", "rewards", "correct", "error")
TEXT_LIMIT = 2000  # characters of a question or rubric kept in a cell


def group_row(run: GroupRun, step: int) -> list[Any]:
    """One group as a table row (COLUMNS)."""
    rubric = run.score.rubric or run.rubric
    criteria = "\n".join(f"[{c.points}] {c.text}" for c in rubric.criteria) if rubric is not None else ""
    rewards = ", ".join(f"{r:.3f}" for r in run.score.rewards) if run.score.rewards is not None else ""
    correct = ", ".join("yes" if c else "no" for c in run.correct) if run.correct is not None else ""
    return [step, run.score.prompt_id, run.question[:TEXT_LIMIT], criteria[:TEXT_LIMIT], rewards, correct, run.score.error or ""]


def markdown_table(rows: list[list[Any]]) -> str:
    """Rows as a markdown table (cells on one line, pipes escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class GroupTables(TrainerCallback):
    """Logs a sample of each step's rubric groups (the reward functions' `last_runs`) to the run's trackers."""

    def __init__(self, trainer: Any, rewards: list[Any], report_to: list[str], per_step: int, seed: int = 0):
        self.trainer, self.rewards, self.report_to, self.per_step, self.seed = trainer, rewards, report_to, per_step, seed
        self._logged = [0] * len(rewards)  # per reward function, its groups_scored when last logged (a reused batch is logged once)

    def sample(self, step: int) -> list[list[Any]]:
        """This step's sampled rows; [] when no new groups were scored since the last call."""
        runs = [run for i, reward in enumerate(self.rewards) if reward.groups_scored != self._logged[i] for run in reward.last_runs]
        self._logged = [reward.groups_scored for reward in self.rewards]
        picked = random.Random(f"{self.seed}:{step}").sample(runs, min(self.per_step, len(runs)))
        return [group_row(run, step) for run in sorted(picked, key=lambda run: run.indices[0])]

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        rows = self.sample(state.global_step)
        if rows:
            self.log(rows, state.global_step)

    def log(self, rows: list[list[Any]], step: int) -> None:
        """Send the rows to every tracker of report_to that is open."""
        if "wandb" in self.report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({TABLE_KEY: wandb.Table(columns=list(COLUMNS), data=rows)})
        if "trackio" in self.report_to:
            import trackio

            trackio.log({TABLE_KEY: trackio.Table(columns=list(COLUMNS), data=rows)})
        if "tensorboard" in self.report_to and (writer := self._tensorboard_writer()) is not None:
            writer.add_text(TABLE_KEY, markdown_table(rows), step)
            writer.flush()

    def _tensorboard_writer(self) -> Any:
        """The writer of the trainer's tensorboard callback (made when training began), if there is one."""
        from transformers.integrations import TensorBoardCallback

        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                return callback.tb_writer
        return None
