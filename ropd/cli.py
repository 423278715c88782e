"""The `ropd` command line: parses arguments and calls the library, nothing more.

stdout carries each command's result; progress, logs and errors go to stderr.
Exit codes: 0 success, 1 the work failed, 2 bad input (arguments, config, data files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from ropd.config import ConfigError, EndpointConfig, JudgeConfig
from ropd.data import DataError
from ropd.models import ModelError

err = Console(stderr=True)
out = Console()

BAD_INPUT = (ConfigError, DataError)


def cmd_models(args: argparse.Namespace) -> int:
    """List model aliases and what they resolve to."""
    from ropd.models import alias_table

    table = Table(title="ropd model aliases")
    for column in ("alias", "kind", "resolves to", "description"):
        table.add_column(column)
    for name, spec in alias_table().items():
        target = spec.target if spec.kind != "api" else f"{spec.target} @ {spec.base_url or 'OPENAI_BASE_URL or api.openai.com'}"
        table.add_row(name, spec.kind, target, spec.description)
    out.print(table)
    return 0


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="List model aliases and what they resolve to.", description=cmd_models.__doc__)
    p.set_defaults(func=cmd_models)


# --- rubric and judge: one call each, for scripts and for checking a judge by hand ------------------


def load_request(path: str, model: type[BaseModel]) -> BaseModel:
    """A JSON input file validated by `model`; DataError names the file and the field."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: input file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read input file: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"field '{'.'.join(str(p) for p in e['loc']) or '(top level)'}': {e['msg']}" for e in exc.errors()]
        raise DataError(f"{path}: " + "; ".join(problems)) from None


def _judge_config(args: argparse.Namespace, template_field: str) -> JudgeConfig:
    fields = {"model": args.model, "base_url": args.base_url, "timeout": args.timeout}
    if args.template:
        fields[template_field] = args.template
    try:
        return JudgeConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None


def _client(cfg: JudgeConfig, role: str, cache_path: str | None):
    from ropd.cache import ResultCache
    from ropd.llm import LLMClient

    endpoint = EndpointConfig(**{k: v for k, v in cfg.model_dump().items() if k in EndpointConfig.model_fields})
    return LLMClient(endpoint, role=role, cache=ResultCache(cache_path) if cache_path else None, max_reasks=cfg.max_reasks)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fail(exc: Exception) -> int:
    err.print("error: " + " ".join(str(exc).split()), markup=False, highlight=False, soft_wrap=True)
    return 1


def cmd_rubric(args: argparse.Namespace) -> int:
    """Induce one rubric from a question, teacher answers and student answers; print it as JSON."""
    from ropd.llm import LLMError
    from ropd.rubrics import RubricRequest, induce_rubric

    request = load_request(args.input, RubricRequest)
    cfg = _judge_config(args, "rubric_template")
    client = _client(cfg, "rubricator", args.cache)
    try:
        rubric = asyncio.run(induce_rubric(client, request.question, request.teacher_answers, request.student_answers, cfg))
    except LLMError as exc:
        return _fail(exc)
    _print_json(rubric.model_dump(mode="json"))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Judge answers against a rubric; print {"rewards": [...], "verdicts": [[...]]} in input order."""
    from ropd.judge import JudgeRequest, judge_answers, rubric_reward
    from ropd.llm import LLMError

    request = load_request(args.input, JudgeRequest)
    cfg = _judge_config(args, "verifier_template")
    client = _client(cfg, "judge", args.cache)
    try:
        met = asyncio.run(judge_answers(client, request.question, request.rubric, request.answers, cfg, seed=0))
    except LLMError as exc:
        return _fail(exc)
    _print_json({"rewards": [rubric_reward(request.rubric, m) for m in met], "verdicts": met})
    return 0


def _add_llm_call_flags(p: argparse.ArgumentParser, input_help: str) -> None:
    p.add_argument("--input", required=True, metavar="FILE", help=input_help)
    p.add_argument("--model", required=True, help="Model: the name the server at --base-url serves, or an API model alias.")
    p.add_argument(
        "--base-url", help="OpenAI-compatible base URL (default: OPENAI_BASE_URL, else the model alias's). Key from OPENAI_API_KEY."
    )
    p.add_argument("--template", metavar="PATH", help="Prompt template: a name in prompts/ or a path to a .jinja file.")
    p.add_argument("--timeout", type=float, help="Seconds before a request is abandoned and retried.")
    p.add_argument("--cache", metavar="FILE", help="SQLite result cache to read and write (default: none).")


def add_rubric(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rubric", help="Induce a rubric for one question (prints the rubric JSON).", description=cmd_rubric.__doc__)
    _add_llm_call_flags(p, 'JSON file: {"question": str, "teacher_answers": [str], "student_answers": [str]}.')
    p.set_defaults(func=cmd_rubric)


def add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="Judge answers against a rubric (prints rewards and verdicts).", description=cmd_judge.__doc__)
    _add_llm_call_flags(p, 'JSON file: {"question": str, "rubric": {"criteria": [...]}, "answers": [str]}.')
    p.set_defaults(func=cmd_judge)


# --- teach: fetch teacher answers into the cache -----------------------------------------------------


def cmd_teach(args: argparse.Namespace) -> int:
    """Fetch k teacher answers per prompt into the run's result cache; print a JSON summary.

    Every answer is stored the moment it arrives, so an interrupted run, rerun, repeats no call.
    A local teacher (alias or path, no --teacher-base-url) is served on loopback for the duration.
    """
    import json

    from ropd.cache import CacheError
    from ropd.config import load_config, overrides_from_args
    from ropd.llm import LLMError
    from ropd.teacher import teach

    config = load_config(args.config, overrides_from_args(args))
    try:
        summary = teach(config, progress=not args.quiet)
    except (CacheError, LLMError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2 if isinstance(exc, CacheError) else 1
    sys.stdout.write(json.dumps(summary) + "\n")
    if "error" in summary:
        err.print(f"error: {summary['error']}", markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0


def add_teach(sub: argparse._SubParsersAction) -> None:
    from ropd.config import add_config_flags

    p = sub.add_parser(
        "teach", help="Fetch k teacher answers per prompt into the cache (prints a JSON summary).", description=cmd_teach.__doc__
    )
    p.add_argument("--config", help="YAML run config; flags override its values.")
    p.add_argument("-k", dest="teacher.num_answers", default=argparse.SUPPRESS, metavar="K", help="Short for --num-teacher-answers.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    add_config_flags(p, ("teacher", "data", "output"))
    p.set_defaults(func=cmd_teach)


# Each entry adds one subcommand. A subcommand is listed only once it works.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_models, add_rubric, add_judge, add_teach]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropd", description="Rubric-based on-policy distillation: distill a teacher you can only talk to into a student you can train."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except BAD_INPUT as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except ModelError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
