"""The methods and their trainers: what `ropd train` runs, and what it costs.

- `run`: `train` and `dry_run`: the config mapped onto TRL's, the trainer for the method built and run;
- `trainers`: the trainer every method runs on (`TimedGRPOTrainer`) and the run's callbacks;
- `opd`, `teacher_logprobs`: the white-box methods (logit OPD, SOD) with a local or a served teacher;
- `distributed`: work the processes of a run do together;
- `costs`, `prices`, `spending`: the cost estimate, the shipped price table, usage.json and the spending limit;
- `preflight`, `resume`, `tracking`: endpoint checks before loading a model, resumed runs, rubric tables in trackers.
"""

__all__ = [
    "costs",
    "distributed",
    "opd",
    "preflight",
    "prices",
    "resume",
    "run",
    "spending",
    "teacher_logprobs",
    "tracking",
    "trainers",
]
