"""`ropd judge-eval`: reward quality of a rubricator + judge setup."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from ropd.cli.common import (
    at_least_one,
    check_writable,
    comma_list,
    err,
    fail,
    print_json,
)
from ropd.config import ConfigError
from ropd.data import DataError
from ropd.flags import add_deprecated


def cmd_judge_eval(args: argparse.Namespace) -> int:
    """Measure how well rubric rewards separate right answers from wrong ones, offline.

    Answers are sampled once from real models (cached), labelled by checking them against each
    prompt's reference answer; items need one right and one wrong answer. Then the rubricator and
    judge score them in each --mode; from the same verdicts, rewards with each code check the judge
    settings turn on (verifiable targets, evidence check) off and on, and with and without the
    consensus criterion. Prints AUC, pairwise
    accuracy, schema validity, calls, tokens and seconds per call: a table on stderr, JSON on stdout.
    """
    from ropd.config import load_config, overrides_from_args
    from ropd.data import load_prompts
    from ropd.endpoints.cache import ResultCache
    from ropd.endpoints.llm import LLMError
    from ropd.endpoints.models import ropd_home
    from ropd.evaluation.judge_eval import (
        MODES,
        JudgeEvalError,
        Sampling,
        build_labelled_set,
        evaluate_judge,
        load_labelled_set,
        parse_model_counts,
        save_labelled_set,
    )

    config = load_config(args.config, overrides_from_args(args))
    endpoint = config.judge_endpoint()
    judge = config.judge.model_copy(update={"model": endpoint.model, "base_url": endpoint.base_url, "api_key_env": endpoint.api_key_env})
    modes = comma_list(args.mode or judge.mode)
    if bad := [m for m in modes if m not in MODES]:
        raise ConfigError(f"--mode: unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    if not args.labelled and not args.dataset:
        raise ConfigError("pass --dataset SPEC (answers are generated and labelled) or --labelled FILE (a saved labelled set)")
    if args.output:
        check_writable(Path(args.output))
    cache_file = Path(args.cache) if args.cache else ropd_home() / "judge_eval.sqlite"
    labelled = load_labelled_set(args.labelled) if args.labelled else None
    try:
        with ResultCache(cache_file) as cache:
            if labelled is not None:
                labelled.items = labelled.items[: args.items] if args.items else labelled.items
            else:
                rows = load_prompts(args.dataset, max_prompts=args.max_prompts)
                sampling = Sampling(temperature=args.answer_temperature, max_tokens=args.answer_max_tokens)
                labelled = build_labelled_set(
                    args.dataset,
                    rows,
                    parse_model_counts(args.generators, 2),
                    parse_model_counts(args.teacher, 2)[0],
                    cache,
                    sampling=sampling,
                    max_answers=args.max_answers,
                    max_items=args.items,
                    aliases=config.models,
                    threads=args.threads,
                )
            if args.save_labelled:
                save_labelled_set(labelled, args.save_labelled)
            if not labelled.items:
                raise DataError(
                    f"no item has both a correct and an incorrect answer ({labelled.examined} prompts examined); "
                    f"use more prompts, more samples per generator, or other generators"
                )
            err.print(
                f"labelled set: {len(labelled.items)} items of {labelled.examined} prompts (dropped: "
                f"{labelled.dropped_no_correct} without a correct answer, {labelled.dropped_no_incorrect} without an incorrect one)",
                markup=False,
                highlight=False,
            )
            report = evaluate_judge(
                labelled, judge, modes, cache, aliases=config.models, concurrency=args.concurrency, threads=args.threads, progress=True
            )
    except (LLMError, JudgeEvalError) as exc:
        return fail(exc)
    err.print(_judge_eval_table(report))
    print_json(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        err.print(f"result written to {args.output}", markup=False, highlight=False)
    return 0


def _judge_eval_table(report: dict) -> Table:
    from rich import box

    def num(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    evidence = {r["expected_evidence"] for r in report["results"]}
    title = f"ropd judge-eval: {report['judge']} on {report['labelled']['items']} items of {report['dataset']}"
    title += ", evidence: " + "/".join("expected+final" if e else "final" for e in sorted(evidence))
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("mode", "checks", "cons.", "items", "AUC", "pairwise", "ties", "valid", "calls", "s/call"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in report["results"]:
        checks = "+".join(name for name, on in (("T", r.get("targets")), ("E", r.get("evidence_check"))) if on) or "-"
        table.add_row(
            r["mode"],
            checks + ("*" if r.get("as_configured") else ""),
            f"on {r['consensus_items']}" if r["consensus"] else "off",
            f"{r['items']}" + (f"+{r['failed_items']}!" if r["failed_items"] else ""),
            num(r["auc"]),
            num(r["pairwise_acc"]),
            num(r["pairwise_ties"], 2),
            num(r["validity"], 2),
            str(r["calls"]),
            num(r["seconds_per_call"], 1),
        )
    table.caption = (
        "checks: code checks on the judge's booleans, T = verifiable targets, E = evidence check (* = as configured: "
        "what training computes); "
        "cons.: consensus criterion (items it was added to); valid: judge replies with complete verdicts"
    )
    return table


def add_judge_eval(sub: argparse._SubParsersAction) -> None:
    from ropd.config import add_config_flags

    p = sub.add_parser(
        "judge-eval",
        help="Measure how well rubric rewards separate right answers from wrong ones (AUC, pairwise accuracy).",
        description=cmd_judge_eval.__doc__,
    )
    p.add_argument("--dataset", help="Prompts with reference answers: a file or reasoning-gym:TASK?size=N&seed=S (use held-out seeds).")
    p.add_argument("--mode", help="Judging mode(s), comma-separated: group, single, consistency (default: the config's judge.mode).")
    p.add_argument("--items", type=at_least_one, help="Judge at most this many items (after dropping unusable prompts).")
    add_deprecated(p, "-n", "--items")  # -n is samples per prompt in `ropd eval`
    p.add_argument("--output", metavar="FILE", help="Also write the JSON report to this file.")
    add_deprecated(p, "--json", "--output")
    p.add_argument("--config", help="YAML run config whose judge section is measured; flags override it.")
    p.add_argument(
        "--generators",
        default="qwen2.5-coder-0.5b:4,smollm2-135m:2",
        help="Models whose answers are judged, MODEL:K comma-separated (K answers per prompt; default: %(default)s).",
    )
    p.add_argument(
        "--teacher",
        default="reference",
        help="Teacher answers the rubricator sees: 'reference' (the dataset's worked solution) or MODEL:K (default: %(default)s).",
    )
    p.add_argument("--max-answers", type=at_least_one, default=3, help="Answers judged per item, right and wrong mixed (default 3).")
    p.add_argument("--answer-max-tokens", type=at_least_one, default=256, help="Tokens per generated answer (default 256).")
    p.add_argument("--answer-temperature", type=float, default=0.7, help="Sampling temperature of generated answers (default 0.7).")
    p.add_argument("--max-prompts", type=at_least_one, help="Use only the first N prompts of the dataset.")
    p.add_argument("--labelled", metavar="FILE", help="Read the labelled set from this file instead of generating it.")
    p.add_argument("--save-labelled", metavar="FILE", help="Write the labelled set (items, answers, labels) to this file.")
    p.add_argument(
        "--cache", metavar="FILE", help="SQLite cache of answers, rubrics and verdicts (default: ~/.cache/ropd/judge_eval.sqlite)."
    )
    p.add_argument("--concurrency", type=at_least_one, default=4, help="Items judged at once (default 4).")
    p.add_argument("--threads", type=at_least_one, help="Torch threads of the local model servers (1 is fastest on a busy CPU).")
    add_config_flags(p, ("judge",))
    p.set_defaults(func=cmd_judge_eval)
