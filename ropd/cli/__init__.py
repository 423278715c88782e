"""The `ropd` command line: parses arguments and calls the library, nothing more.

stdout carries each command's result; progress, logs and errors go to stderr.
Exit codes: 0 success, 1 the work failed, 2 bad input (arguments, config, data files, an endpoint that does not answer),
3 a training run stopped at its spending limit (output.max_cost_usd; resumable).

Longer than 500 lines on purpose: one short section per command (`cmd_X` runs it, `add_X` declares its flags), kept
together so every command and flag is found in one place; logic a command grows moves into the library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from ropd.config import ConfigError, EndpointConfig, JudgeConfig
from ropd.data import DataError
from ropd.endpoints.models import ModelError

err = Console(stderr=True)
out = Console()

BAD_INPUT = (ConfigError, DataError)


def cmd_models(args: argparse.Namespace) -> int:
    """List model aliases and what they resolve to."""
    from ropd.endpoints.models import alias_table

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


def _judge_config(args: argparse.Namespace, template_field: str) -> tuple[JudgeConfig, dict]:
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


def _client(cfg: JudgeConfig, role: str, cache_path: str | None, aliases: dict | None = None):
    from ropd.endpoints.cache import ResultCache
    from ropd.endpoints.llm import LLMClient
    from ropd.reward.judge import judge_endpoint

    endpoint = EndpointConfig(**{k: v for k, v in cfg.model_dump().items() if k in EndpointConfig.model_fields})
    if role == "judge":
        endpoint = judge_endpoint(endpoint, cfg)  # consistency mode samples at its own temperature, as in training
    cache = ResultCache(cache_path) if cache_path else None
    return LLMClient(endpoint, role=role, cache=cache, max_reasks=cfg.max_reasks, aliases=aliases or None)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fail(exc: Exception) -> int:
    err.print("error: " + " ".join(str(exc).split()), markup=False, highlight=False, soft_wrap=True)
    return 1


def cmd_rubric(args: argparse.Namespace) -> int:
    """Induce one rubric from a question, teacher answers and student answers; print it as JSON."""
    from ropd.endpoints.llm import LLMError
    from ropd.reward.rubrics import RubricRequest, induce_rubric

    request = load_request(args.input, RubricRequest)
    cfg, aliases = _judge_config(args, "rubric_template")
    client = _client(cfg, "rubricator", args.cache, aliases)
    try:
        rubric = asyncio.run(induce_rubric(client, request.question, request.teacher_answers, request.student_answers, cfg))
    except LLMError as exc:
        return _fail(exc)
    _print_json(rubric.model_dump(mode="json", exclude_none=True))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Judge answers against a rubric and score them exactly as training does (ropd.reward.scoring: the judge's booleans plus
    the code checks the judge settings turn on); print, in input order, {"rewards": [...], "verdicts": [[...]]} (the
    booleans that count, one per criterion of the scored rubric), "judge_verdicts" (the judge's own booleans),
    "criteria" (ids of the scored rubric: a consensus criterion is appended when added) and "decided_by" (per criterion:
    judge, evidence, target or consensus)."""
    from ropd.endpoints.llm import LLMError
    from ropd.reward.judge import JudgeRequest
    from ropd.reward.scoring import score_group

    request = load_request(args.input, JudgeRequest)
    cfg, aliases = _judge_config(args, "verifier_template")
    client = _client(cfg, "judge", args.cache, aliases)
    answers_only = cfg.model_copy(update={"score_teacher_answers": "off"})  # the teacher answers ground the checks only
    group = score_group(
        request.question, request.teacher_answers, request.answers, answers_only, None, client, seed=args.seed, rubric=request.rubric
    )
    outcome = asyncio.run(group)
    if outcome.error is not None or outcome.scored is None:
        return _fail(LLMError(outcome.error))
    scored = outcome.scored
    _print_json(
        {
            "rewards": scored.rewards,
            "verdicts": scored.met,
            "judge_verdicts": [v.met for v in outcome.verdicts],
            "criteria": [c.id for c in scored.rubric.criteria],
            "decided_by": scored.decided_by,
        }
    )
    return 0


def _add_llm_call_flags(p: argparse.ArgumentParser, input_help: str) -> None:
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
    add_config_flags(p, ("judge",))


def add_rubric(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rubric", help="Induce a rubric for one question (prints the rubric JSON).", description=cmd_rubric.__doc__)
    _add_llm_call_flags(p, 'JSON file: {"question": str, "teacher_answers": [str], "student_answers": [str]}.')
    p.set_defaults(func=cmd_rubric)


def add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="Judge answers against a rubric (prints rewards and verdicts).", description=cmd_judge.__doc__)
    _add_llm_call_flags(
        p,
        'JSON file: {"question": str, "rubric": {"criteria": [...]}, "answers": [str], "teacher_answers": [str] (optional: they '
        "ground verifiable targets and give the consensus answer)}.",
    )
    p.add_argument("--seed", default="0", help="Seed of the answers' shuffle (training uses PROMPT_ID:STEP, e.g. gsm-3:12; default: 0).")
    p.set_defaults(func=cmd_judge)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a local model (alias, GGUF file, folder or Hub id) over an OpenAI-compatible API until Ctrl-C.

    A small launcher: GGUF models (the packaged ones included) run on llama.cpp's llama-server from
    their file as it is; Hugging Face models run on vLLM on a GPU, else on llama-server after a
    one-time conversion to GGUF (--dtype picks its type). Requests may send n, seed, temperature,
    top_p, max_tokens, stop and response_format (json_schema / json_object).
    """
    from ropd.endpoints.serve import ServeError, run_server

    try:
        run_server(
            args.model,
            host=args.host,
            port=args.port,
            served_name=args.served_name,
            dtype=args.dtype,
            engine=args.engine,
            threads=args.threads,
            slots=args.slots,
            slot_context=args.slot_context,
        )
    except ServeError as exc:
        return _fail(exc)
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    from ropd.endpoints.serve import DEFAULT_SLOTS, ENGINES, GGUF_TYPES

    p = sub.add_parser("serve", help="Serve a local model over an OpenAI-compatible API.", description=cmd_serve.__doc__)
    p.add_argument("model", help="Model alias (see `ropd models`), .gguf file, local folder or Hub id.")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: loopback only).")
    p.add_argument("--port", type=int, default=8000, help="Port to listen on.")
    p.add_argument("--served-name", help="The model name the server reports (default: MODEL as given).")
    p.add_argument("--engine", default="auto", choices=ENGINES, help="auto: vLLM for Hugging Face models on a GPU, else llama.cpp.")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=list(GGUF_TYPES),
        help="Weights of a Hugging Face model: llama.cpp converts it to f16 (auto), f32, bf16 or q8_0 (int8); vLLM takes "
        "the dtype as is. Packaged GGUF models are served as shipped.",
    )
    p.add_argument("--threads", type=int, help="llama.cpp CPU threads (default: the cores this process may use; see taskset).")
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="llama.cpp: requests decoded together (each of n samples takes one).")
    p.add_argument("--slot-context", type=int, help="llama.cpp: context tokens per slot (default: min(8192, the model's)).")
    p.set_defaults(func=cmd_serve)


def cmd_train(args: argparse.Namespace) -> int:
    """Train the student: rubric OPD by default; --method picks opd, sod or grpo."""
    from ropd.config import load_config, overrides_from_args
    from ropd.endpoints.cache import CacheError
    from ropd.training.run import SpendingLimitReached, TrainingError, dry_run, train

    overrides = overrides_from_args(args)
    config = load_config(train_config_path(args.config, overrides), overrides)
    if args.dry_run:
        from ropd.training.costs import print_estimate

        print_estimate(dry_run(config), "estimated API usage (dry run: nothing was called)", stderr=False)
        return 0
    try:
        final = train(config)
    except (CacheError, TrainingError) as exc:  # an unusable cache is bad input (2); a run that cannot go on failed (1)
        label = "stopped" if isinstance(exc, SpendingLimitReached) else "error"
        err.print(f"{label}: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2 if isinstance(exc, CacheError) else 3 if isinstance(exc, SpendingLimitReached) else 1
    out.print(str(final), highlight=False)
    return 0


RUN_CONTROL = {"output.resume"}  # flags that leave `ropd train`'s config source as it is


def train_config_path(given: str | None, overrides: dict) -> Path | None:
    """The YAML file `ropd train` starts from: --config; with --resume, the run's saved config.yaml; with no flag but
    --resume, the embedded default (configs/default.yaml); else none (the library defaults)."""
    from ropd.config import DEFAULT_CONFIG, OutputConfig
    from ropd.training.resume import saved_config

    if given:
        return Path(given)
    if overrides.get("output.resume") and (saved := saved_config(Path(overrides.get("output.dir") or OutputConfig().dir))):
        err.print(f"--resume without --config: continuing the run's saved config {saved}", markup=False, highlight=False)
        return saved
    return DEFAULT_CONFIG if set(overrides) <= RUN_CONTROL else None


def add_train(sub: argparse._SubParsersAction) -> None:
    from ropd.config import add_config_flags

    p = sub.add_parser(
        "train",
        help="Train a student on-policy from a teacher (rubric OPD by default).",
        description=cmd_train.__doc__
        + " With no arguments at all (or only --resume) it runs configs/default.yaml, the offline demo. Otherwise it starts "
        "from the published settings shown below, then --config FILE (with --resume and no --config: the run's saved "
        "config.yaml), then flags. --resume refuses a config that changed anything but the fields a resumed run may change.",
    )
    p.add_argument("--config", help="YAML run config; flags override its values. With --resume and no --config: the run's saved config.")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the estimated API calls, tokens and cost per role of this run (same config and flags) and exit: reads "
        "the dataset and the student's tokenizer, renders the real rubricator and judge prompts, calls nothing.",
    )
    add_config_flags(p)
    p.set_defaults(func=cmd_train)


# --- eval: accuracy of a local model on a dataset ----------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure a local model's accuracy on a dataset: avg@n over n samples per prompt, and pass@k.

    `--suite` evaluates one of the papers' suites (AIME24/25, HMMT25, GPQA-Diamond) scored by its own rule;
    `--protocol published` samples as ROPD reports (avg@16, temperature 1.0, top-p 0.95).

    Prints a summary table on stderr and the full result (per-prompt records included) as JSON on
    stdout, or to --json FILE.
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
    if args.json:
        _check_writable(Path(args.json))
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
    if args.json:
        Path(args.json).write_text(text)
        err.print(f"result written to {args.json}", markup=False, highlight=False)
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


def _check_writable(path: Path) -> None:
    """Fail before the work, not after it, when the result file cannot be written."""
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--json {path}: cannot create its folder: {exc}") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--json {path}: not a writable file path")


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


def _at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


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
    p.add_argument("-n", "--samples", type=_at_least_one, help="Samples per prompt (default 1, or the --protocol's).")
    p.add_argument("-k", type=_at_least_one, help="k of pass@k, at most -n (default: n).")
    p.add_argument("--max-prompts", type=_at_least_one, help="Evaluate only the first N prompts.")
    p.add_argument("--max-new-tokens", type=_at_least_one, default=256, help="Tokens generated per sample at most (default 256).")
    p.add_argument("--temperature", type=float, help="Sampling temperature; 0 is greedy (default 0, or the --protocol's).")
    p.add_argument("--top-p", type=float, help="Nucleus sampling mass (default 1.0, or the --protocol's).")
    p.add_argument("--batch-size", type=_at_least_one, default=8, help="Sequences generated together (default 8).")
    p.add_argument("--seed", type=int, default=0, help="Sampling seed (default 0).")
    p.add_argument("--system-prompt", help="System message added to prompts that have none.")
    p.add_argument(
        "--backend",
        choices=("auto", "transformers", "vllm"),
        default="auto",
        help="Generation engine (auto: vLLM when installed with a GPU).",
    )
    p.add_argument("--json", metavar="OUT", help="Write the JSON result to this file instead of stdout.")
    p.set_defaults(func=cmd_eval)


# --- teach: fetch teacher answers into the cache -----------------------------------------------------


def cmd_teach(args: argparse.Namespace) -> int:
    """Fetch k teacher answers per prompt into the run's result cache; print a JSON summary.

    Every answer is stored the moment it arrives, so an interrupted run, rerun, repeats no call.
    A local teacher (alias or path, no --teacher-base-url) is served on loopback for the duration.
    """
    import json

    from ropd.config import load_config, overrides_from_args
    from ropd.endpoints.cache import CacheError
    from ropd.endpoints.llm import LLMError
    from ropd.reward.teacher import teach

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


# --- bench: sample efficiency of the methods on one budget axis ----------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark sample efficiency: choose each arm's learning rate on validation prompts (with learning_rates), train
    every arm x seed from one student and teacher, evaluate held-out accuracy every N training samples, and write
    results.json, results.md (95% intervals, paired differences), curves.png and sweep.json/sweep.md.

    A rerun resumes: finished arms are read back, not trained again. Prints the results.json path on stdout.
    """
    from ropd.bench.runner import load_bench_config, run_bench

    overrides: dict[str, object] = {"output_dir": args.output_dir} if args.output_dir else {}
    if args.seeds:
        overrides["seeds"] = [v.strip() for v in args.seeds.split(",") if v.strip()]  # checked by BenchConfig
    bench = load_bench_config(args.config, overrides)
    only = [v.strip() for v in args.arms.split(",") if v.strip()] if args.arms else None
    results = run_bench(bench, config_path=args.config, finished_only=args.finished_only, only=only)
    h = results["headline"]
    err.print(f"headline: {h['status']}" + (f", ratio {h['ratio']:.2f}x" if h["ratio"] is not None else "") + f" ({h['note']})")
    out.print(str(Path(bench.output_dir) / "results.json"), highlight=False)
    return 0


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="Sample efficiency of rubric OPD vs logit OPD, SOD and GRPO (held-out accuracy curves).",
        description=cmd_bench.__doc__,
    )
    p.add_argument(
        "--config", required=True, help="YAML bench config (see experiments/bench-cpu.yaml and ropd/bench/config.py's BenchConfig)."
    )
    p.add_argument("--output-dir", help="Override the config's output_dir.")
    p.add_argument(
        "--arms",
        "--methods",
        dest="arms",
        help="Train only these arms now (names from the config's arms or methods), comma-separated; the others' finished "
        "results are read back, and a later full run reads these back.",
    )
    p.add_argument("--seeds", help="Run only these seeds now, comma-separated.")
    p.add_argument("--finished-only", action="store_true", help="Train nothing: write the results files from the arms that have finished.")
    p.set_defaults(func=cmd_bench)


# --- judge-eval: reward quality of a rubricator + judge setup ----------------------------------------


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
    modes = [m.strip() for m in (args.mode or judge.mode).split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        raise ConfigError(f"--mode: unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    if not args.labelled and not args.dataset:
        raise ConfigError("pass --dataset SPEC (answers are generated and labelled) or --labelled FILE (a saved labelled set)")
    if args.json:
        _check_writable(Path(args.json))
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
        return _fail(exc)
    err.print(_judge_eval_table(report))
    _print_json(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        err.print(f"result written to {args.json}", markup=False, highlight=False)
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
    p.add_argument("-n", "--items", type=_at_least_one, help="Judge at most this many items (after dropping unusable prompts).")
    p.add_argument("--json", metavar="OUT", help="Also write the JSON report to this file.")
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
    p.add_argument("--max-answers", type=_at_least_one, default=3, help="Answers judged per item, right and wrong mixed (default 3).")
    p.add_argument("--answer-max-tokens", type=_at_least_one, default=256, help="Tokens per generated answer (default 256).")
    p.add_argument("--answer-temperature", type=float, default=0.7, help="Sampling temperature of generated answers (default 0.7).")
    p.add_argument("--max-prompts", type=_at_least_one, help="Use only the first N prompts of the dataset.")
    p.add_argument("--labelled", metavar="FILE", help="Read the labelled set from this file instead of generating it.")
    p.add_argument("--save-labelled", metavar="FILE", help="Write the labelled set (items, answers, labels) to this file.")
    p.add_argument(
        "--cache", metavar="FILE", help="SQLite cache of answers, rubrics and verdicts (default: ~/.cache/ropd/judge_eval.sqlite)."
    )
    p.add_argument("--concurrency", type=_at_least_one, default=4, help="Items judged at once (default 4).")
    p.add_argument("--threads", type=_at_least_one, help="Torch threads of the local model servers (1 is fastest on a busy CPU).")
    add_config_flags(p, ("judge",))
    p.set_defaults(func=cmd_judge_eval)


# --- inspect: a static HTML report of a run or a bench ---------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    """Write a static HTML report of a run folder (config, usage, curves, every group's rubric, verdicts and rewards)
    or of a bench folder (curves, per-seed table, links to each arm's run report). It opens from disk: no server, no
    network. Prints the path of its index.html on stdout."""
    from ropd.report.inspect import InspectError, build_report

    try:
        index = build_report(args.path, args.out)
    except InspectError as exc:
        raise DataError(str(exc)) from None
    out.print(str(index), highlight=False, soft_wrap=True)
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="Write a static HTML report of a run or bench folder.", description=cmd_inspect.__doc__)
    p.add_argument("path", metavar="RUN_DIR", help="A run's output folder, or a bench's output_dir (it holds results.json).")
    p.add_argument("--out", metavar="DIR", help="Folder of the report (default: RUN_DIR/report).")
    p.set_defaults(func=cmd_inspect)


# Each entry adds one subcommand. A subcommand is listed only once it works.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_models,
    add_rubric,
    add_judge,
    add_serve,
    add_train,
    add_eval,
    add_teach,
    add_bench,
    add_judge_eval,
    add_inspect,
]


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
