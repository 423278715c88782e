"""What the subcommands share: the consoles, flag types, and the flags and clients of a single rubricator or judge call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ValidationError
from rich.console import Console

from ropd.config import ConfigError, EndpointConfig, JudgeConfig
from ropd.data import DataError

err = Console(stderr=True)


out = Console()


BAD_INPUT = (ConfigError, DataError)


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


def judge_config(args: argparse.Namespace, template_field: str) -> tuple[JudgeConfig, dict]:
    """The judge settings of a one-off call, resolved as `ropd train` resolves them, and the model alias table.

    The library defaults, then the `judge:` section of --config FILE (an unset judge model takes the
    config's teacher model and base URL, as in training), then the --judge-* flags, then --model,
    --base-url, --template and --timeout. With no base URL anywhere, OPENAI_BASE_URL; with a base URL
    the model name passes to that server verbatim.
    """
    from ropd.config import load_config, overrides_from_args

    config = load_config(args.config, overrides_from_args(args))
    endpoint = config.judge_endpoint()
    fields = {**config.judge.model_dump(), "model": endpoint.model, "base_url": endpoint.base_url, "api_key_env": endpoint.api_key_env}
    if args.model:
        fields["model"] = args.model
    fields["base_url"] = args.base_url or fields["base_url"] or os.environ.get("OPENAI_BASE_URL") or None
    if args.timeout is not None:
        fields["timeout"] = args.timeout
    if args.template:
        fields[template_field] = args.template
    try:
        return JudgeConfig(**fields), config.models
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None


def llm_client(cfg: JudgeConfig, role: str, cache_path: str | None, aliases: dict | None = None):
    from ropd.endpoints.cache import ResultCache
    from ropd.endpoints.llm import LLMClient
    from ropd.reward.judge import judge_endpoint

    endpoint = EndpointConfig(**{k: v for k, v in cfg.model_dump().items() if k in EndpointConfig.model_fields})
    if role == "judge":
        endpoint = judge_endpoint(endpoint, cfg)  # consistency mode samples at its own temperature, as in training
    cache = ResultCache(cache_path) if cache_path else None
    return LLMClient(endpoint, role=role, cache=cache, max_reasks=cfg.max_reasks, aliases=aliases or None)


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(exc: Exception) -> int:
    err.print("error: " + " ".join(str(exc).split()), markup=False, highlight=False, soft_wrap=True)
    return 1


def add_llm_call_flags(p: argparse.ArgumentParser, input_help: str) -> None:
    from ropd.config import add_config_flags

    p.add_argument("--input", required=True, metavar="FILE", help=input_help)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML run config: its judge section (as `ropd train` resolves it) sets the judge; flags override it.",
    )
    p.add_argument(
        "--model",
        help="Model: the name the server at --base-url serves, or an API model alias (default: the config's judge, as in training).",
    )
    p.add_argument(
        "--base-url",
        help="OpenAI-compatible base URL (default: the config's, else OPENAI_BASE_URL, else the model alias's). Key from OPENAI_API_KEY.",
    )
    p.add_argument(
        "--template", metavar="PATH", help="Prompt template: a name in ropd/templates/ (prompts/ in a checkout) or a path to a .jinja file."
    )
    p.add_argument("--timeout", type=float, help="Seconds before a request is abandoned and retried.")
    p.add_argument("--cache", metavar="FILE", help="SQLite result cache to read and write (default: none).")
    add_config_flags(p, ("judge",), replaced={"judge.model": "--model", "judge.base_url": "--base-url"})


def check_writable(path: Path) -> None:
    """Fail before the work, not after it, when the result file cannot be written."""
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot create its folder: {exc}") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--output {path}: not a writable file path")


def comma_list(text: str) -> list[str]:
    """A flag's comma-separated values, stripped, empty ones left out."""
    return [v.strip() for v in text.split(",") if v.strip()]


def at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number
