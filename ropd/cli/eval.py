"""`ropd eval`: accuracy of a local model on a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from ropd.cli.common import (
    at_least_one,
    check_writable,
    err,
)
from ropd.config import ConfigError
from ropd.data import DataError
from ropd.flags import add_deprecated


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure a local model's accuracy on a dataset: avg@n over n samples per prompt, and pass@k.

    `--suite` evaluates one of the papers' suites (AIME24/25, HMMT25, GPQA-Diamond) scored by its own rule;
    `--protocol published` samples as ROPD reports (avg@16, temperature 1.0, top-p 0.95).

    Prints a summary table on stderr and the full result (per-prompt records included) as JSON on
    stdout, or to --output FILE.
    """
    from ropd.endpoints.models import is_local
    from ropd.evaluation.eval import EvalError, evaluate_path

    if not is_local(args.model):
        raise ConfigError(
            f"'{args.model}' is an API model; `ropd eval` needs local weights (an alias from `ropd models`, a folder or a Hub id)"
        )
    prompts = _eval_prompts(args)
    if not prompts:
        raise DataError(f"{args.dataset}: no prompts to evaluate")
    settings = {**_sampling(args), "k": args.k, "batch_size": args.batch_size}
    if args.output:
        check_writable(Path(args.output))
    try:
        result = evaluate_path(
            args.model,
            prompts,
            backend=args.backend,
            dataset=args.suite or args.dataset,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            **settings,
        )
    except EvalError as exc:
        raise ConfigError(str(exc)) from None
    err.print(_eval_table(result))
    text = result.model_dump_json(indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        err.print(f"result written to {args.output}", markup=False, highlight=False)
    else:
        sys.stdout.write(text)
    return 0


def _eval_prompts(args: argparse.Namespace) -> list:
    """The rows `ropd eval` scores: a suite's (from its Hub release, or --dataset in the release's columns), or --dataset's."""
    from ropd.data import load_prompts
    from ropd.evaluation.suites import load_suite

    if args.suite:
        return load_suite(args.suite, args.dataset, args.max_prompts, args.system_prompt)
    if not args.dataset:
        raise ConfigError("give --dataset, or --suite for one of the papers' suites")
    return load_prompts(args.dataset, split=args.split, max_prompts=args.max_prompts, system_prompt=args.system_prompt)


def _sampling(args: argparse.Namespace) -> dict:
    """Samples, temperature and top-p: the flags given, else the --protocol preset's, else greedy with one sample."""
    from ropd.evaluation.suites import PUBLISHED_PROTOCOL

    preset = PUBLISHED_PROTOCOL if args.protocol == "published" else {"n_samples": 1, "temperature": 0.0, "top_p": 1.0}
    given = {"n_samples": args.samples, "temperature": args.temperature, "top_p": args.top_p}
    return {name: preset[name] if value is None else value for name, value in given.items()}


def _eval_table(result) -> Table:
    summary = {
        "prompts": str(result.num_prompts),
        "samples": str(result.n_samples),
        f"avg@{result.n_samples}": f"{result.accuracy:.3f}",
        f"pass@{result.k}": f"{result.pass_at_k:.3f}",
        "answered": f"{result.answered:.0%}",
        "truncated": f"{result.truncated:.0%}",
        "tokens/sample": f"{result.mean_completion_tokens:.0f}",
        "seconds": f"{result.seconds:.1f}",
    }
    table = Table(title=f"ropd eval: {result.model} on {result.dataset}")
    for column in summary:
        table.add_column(column, justify="right")
    table.add_row(*summary.values())
    return table


def add_eval(sub: argparse._SubParsersAction) -> None:
    from ropd.evaluation.suites import SUITES, UNSUPPORTED

    p = sub.add_parser("eval", help="Measure a local model's accuracy on a dataset (avg@n, pass@k).", description=cmd_eval.__doc__)
    p.add_argument("--model", required=True, help="Model to evaluate: alias (see `ropd models`), local folder or Hub id.")
    p.add_argument(
        "--dataset",
        help="Dataset spec: a .jsonl/.json/.parquet/.csv file, reasoning-gym:TASK?size=N&seed=S, or a Hub id. With --suite: a local "
        "copy of the suite's release, in its own columns (default: the release on the Hub).",
    )
    p.add_argument(
        "--suite",
        choices=sorted([*SUITES, *UNSUPPORTED]),
        help="One of the papers' evaluation suites, read from its Hub release and scored by its own rule (math answers with "
        "math-verify, GPQA by option letter).",
    )
    p.add_argument(
        "--protocol",
        choices=("published",),
        help="Sampling preset: published = ROPD's avg@16 at temperature 1.0, top-p 0.95 (SOD reports avg@32: add -n 32). "
        "-n, --temperature and --top-p override it.",
    )
    p.add_argument("--split", default="test", help="Split of a Hub dataset (default: test; files and reasoning-gym ignore it).")
    p.add_argument("-n", "--samples", type=at_least_one, help="Samples per prompt (default 1, or the --protocol's).")
    p.add_argument("-k", type=at_least_one, help="k of pass@k, at most -n (default: n).")
    p.add_argument("--max-prompts", type=at_least_one, help="Evaluate only the first N prompts.")
    p.add_argument("--max-new-tokens", type=at_least_one, default=256, help="Tokens generated per sample at most (default 256).")
    p.add_argument("--temperature", type=float, help="Sampling temperature; 0 is greedy (default 0, or the --protocol's).")
    p.add_argument("--top-p", type=float, help="Nucleus sampling mass (default 1.0, or the --protocol's).")
    p.add_argument("--batch-size", type=at_least_one, default=8, help="Sequences generated together (default 8).")
    p.add_argument("--seed", type=int, default=0, help="Sampling seed (default 0).")
    p.add_argument("--system-prompt", help="System message added to prompts that have none.")
    p.add_argument(
        "--backend",
        choices=("auto", "transformers", "vllm"),
        default="auto",
        help="Generation engine (auto: vLLM when installed with a GPU).",
    )
    p.add_argument("--output", metavar="FILE", help="Write the JSON result to this file instead of stdout.")
    add_deprecated(p, "--json", "--output")
    p.set_defaults(func=cmd_eval)
