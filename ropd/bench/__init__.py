"""The bench: sample efficiency of the methods on one budget axis (`ropd bench`).

- `config`: the bench YAML (`BenchConfig`) and each arm's run config;
- `runner`: every method x seed on one budget, with held-out evaluations during training;
- `costs`: teacher and judge tokens per arm and their cost; `stats`: bootstrap intervals and paired differences;
- `report`: summaries over seeds and the headline; `results`: results.json, results.md and the plots.
"""

__all__ = ["config", "costs", "report", "results", "runner", "stats"]
