"""How long one Python tool call takes when the program does nothing: the sandbox's start-up cost.

Times `ropd.tools.toolbox.run_python("print(1+1)")` (`--calls` times, after one warm-up call) and appends the median, the
mean and the spread, with the date, the machine's load and the ropd code measured, to
experiments/results/sandbox_startup.json (`--out`), the file the README and docs/sandbox.md cite.

    .venv/bin/python experiments/sandbox_startup.py --label after [--calls 30] [--sandbox jail]

The `before` figure was taken the same way from the code before the jail, by putting its `ropd` first on the path
(`PYTHONPATH=<old checkout> .venv/bin/python experiments/sandbox_startup.py --label before`).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import statistics
import time
from pathlib import Path

import ropd.tools.toolbox as tools

RESULTS = Path(__file__).resolve().parent / "results"


def timed_calls(calls: int, sandbox: str | None) -> list[float]:
    """Seconds per call of `print(1+1)`, after one untimed warm-up call."""
    kwargs = {} if sandbox is None else {"sandbox": sandbox}
    limits = tools.SandboxLimits(**kwargs)
    assert tools.run_python("print(1+1)", limits).strip() == "2"
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        tools.run_python("print(1+1)", limits)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="what is measured: before, after, ...")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--sandbox", default=None, help="tools.python_sandbox (the code's default when not given)")
    parser.add_argument("--out", type=Path, default=RESULTS / "sandbox_startup.json")
    args = parser.parse_args()
    has_modes = "sandbox" in inspect.signature(tools.SandboxLimits).parameters
    times = timed_calls(args.calls, args.sandbox if has_modes else None)
    record = {
        "label": args.label,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sandbox": (args.sandbox or tools.SandboxLimits().sandbox) if has_modes else "audit hook (before the jail)",
        "calls": args.calls,
        "median_s": round(statistics.median(times), 4),
        "mean_s": round(statistics.mean(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "ropd_tools": str(Path(tools.__file__).resolve()),
    }
    print(json.dumps(record))
    records = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*records, record], indent=1) + "\n")


if __name__ == "__main__":
    main()
