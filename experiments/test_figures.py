"""The README's figures that the test suite measures, written to experiments/results/test_figures.json.

The reliability tests (API faults, an endpoint down, kill -9, a corrupt cache, bad input, a canary key) and
the report tests of `ropd inspect` (build time and size of a 500-step run, a browser opening it) print what
they measured; with $ROPD_FIGURES_FILE set they also append it to that file (`tests/scripted_pipeline.py`,
`record_figure`). This script runs them with it set and writes the figures, with the date, the machine's load
and the tests' outcome, to the results file; nothing is written when a test fails.

    .venv/bin/python experiments/test_figures.py [--out experiments/results/test_figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_reward_latency import RESULTS, machine_state

REPO = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_reliability.py",
    "tests/test_secrets.py",
    "tests/test_teacher.py::test_teach_killed_midway_then_rerun_repeats_no_call",
    "tests/test_inspect.py::test_a_large_run_is_paged_and_chunked_and_builds_in_seconds",
    "tests/test_inspect.py::test_report_of_a_real_run",
    "tests/test_inspect.py::test_browser_filters_and_lazy_loaded_groups",
]


def run_tests(figures: Path) -> tuple[int, str, float]:
    """Run the tests with the figures file set; return pytest's exit code, its last line and the seconds taken."""
    env = {**os.environ, "ROPD_FIGURES_FILE": str(figures)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO, env=env, capture_output=True, text=True
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, lines[-1] if lines else result.stderr[-500:], time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "test_figures.json", help="where the figures are written")
    args = parser.parse_args()
    machine = machine_state()
    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.jsonl"
        code, summary, seconds = run_tests(figures_file)
        figures = [json.loads(line) for line in figures_file.read_text().splitlines()] if figures_file.is_file() else []
    print(summary)
    for figure in figures:
        print(f"{figure['name']}: {figure['text']}")
    if code != 0:
        print(f"pytest exited {code}: {args.out} left as it was", file=sys.stderr)
        return 1
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    record = {"machine": machine, "tests": TESTS, "pytest": summary, "seconds": round(seconds, 1), "figures": figures}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
