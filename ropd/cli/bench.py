"""`ropd bench`: sample efficiency of the methods on one budget axis."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropd.cli.common import (
    comma_list,
    err,
    out,
)
from ropd.config import ConfigError
from ropd.flags import add_deprecated


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark sample efficiency: choose each arm's learning rate on validation prompts (with learning_rates), train
    every arm x seed from one student and teacher, evaluate held-out accuracy every N training samples, and write
    results.json, results.md (95% intervals, paired differences), curves.png and sweep.json/sweep.md.

    A rerun resumes: finished arms are read back, not trained again. Prints the results.json path on stdout.
    """
    from ropd.bench.runner import load_bench_config, run_bench

    overrides: dict[str, object] = {"output_dir": args.output} if args.output else {}
    bench = load_bench_config(args.config, overrides)
    only = comma_list(args.arms) if args.arms else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    results = run_bench(bench, config_path=args.config, finished_only=args.finished_only, only=only, seeds=seeds)
    h = results["headline"]
    err.print(f"headline: {h['status']}" + (f", ratio {h['ratio']:.2f}x" if h["ratio"] is not None else "") + f" ({h['note']})")
    out.print(str(Path(bench.output_dir) / "results.json"), highlight=False)
    return 0


def parse_seeds(text: str) -> list[int]:
    """--seeds 1,2 as integers; anything else is a usage error that names the value."""
    try:
        seeds = [int(v) for v in comma_list(text)]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 1,2")
    return seeds


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="Sample efficiency of rubric OPD vs logit OPD, SOD and GRPO (held-out accuracy curves).",
        description=cmd_bench.__doc__,
    )
    p.add_argument(
        "--config", required=True, help="YAML bench config (see experiments/bench-cpu.yaml and ropd/bench/config.py's BenchConfig)."
    )
    p.add_argument("--output", metavar="DIR", help="Override the config's output_dir.")
    add_deprecated(p, "--output-dir", "--output")
    p.add_argument(
        "--arms",
        "--methods",
        dest="arms",
        help="Train only these arms now (names from the config's arms or methods), comma-separated; the others' finished "
        "results are read back, and a later full run reads these back.",
    )
    p.add_argument(
        "--seeds",
        help="Train only these of the config's seeds now, comma-separated; the others' finished results are read back "
        "(the learning-rate sweep stays on the config's first seed).",
    )
    p.add_argument("--finished-only", action="store_true", help="Train nothing: write the results files from the arms that have finished.")
    p.set_defaults(func=cmd_bench)
