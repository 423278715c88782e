"""What a run's API calls will cost, before it starts: calls, prompt and completion tokens, and USD per role.

    estimate = estimate_run(config, prompts, tokenizer)
    console.print(estimate_table(estimate))

The figures come from the real rubricator and judge prompts, rendered for a sample of the run's prompts, and
the run's settings: steps, prompts per step, rollouts, teacher answers, judge mode and chunk size. The upper
bound has every rollout, teacher answer and reply at its length limit and no cache hit; a typical figure is
shown where an earlier run left something to go by (cached results: mean reply lengths per role; metrics.jsonl:
mean rollout length). Tokens are counted with the student's tokenizer (characters / 4 where it cannot be loaded),
which is close to, not the same as, an API model's. Not counted: re-asks after invalid replies, tool rounds.

Costs use the config's price table (ropd/training/prices.py plus `prices:`); a model missing from it has an unknown cost,
never $0. Local models ropd serves cost nothing.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ropd.config import EndpointConfig, Price, RunConfig
from ropd.endpoints.cache import usage_rows
from ropd.endpoints.models import is_local, resolve_model
from ropd.training.prices import PRICES_AS_OF
from ropd.types import Criterion, PromptRow, Rubric, Usage

ROLES = ("teacher", "rubricator", "judge")
TABLE_WIDTH = 160  # characters: the table is printed whole, not squeezed into a narrow terminal
MESSAGE_OVERHEAD = 4  # tokens a chat format adds per message
CRITERION_TOKENS = 100  # upper bound of one criterion as the judge sees it (ropd.reward.rubrics.CRITERION_MAX_CHARS / 4)
SAMPLE_PROMPTS = 8  # prompts whose rubricator and judge prompts are rendered


# --- prices ------------------------------------------------------------------------------------------


def billed_model(endpoint: EndpointConfig, config: RunConfig) -> str:
    """The model name a request to `endpoint` is billed under: the served name with a base URL, else the alias's target."""
    if endpoint.base_url or is_local(endpoint.model, config.models):
        return endpoint.model
    return resolve_model(endpoint.model, config.models).target


def price_for(endpoint: EndpointConfig, config: RunConfig) -> Price | None:
    """The price of calls to `endpoint`: free for a local model ropd serves, else the price table's entry (None: unknown)."""
    if not endpoint.base_url and is_local(endpoint.model, config.models):
        return Price(input=0.0, output=0.0)
    return config.prices.get(billed_model(endpoint, config)) or config.prices.get(endpoint.model)


def role_endpoints(config: RunConfig) -> dict[str, EndpointConfig]:
    """The endpoint of each role the run pays for: teacher, rubricator and judge with a rubric reward, none otherwise."""
    from ropd.reward.setup import uses_rubric_reward

    if not uses_rubric_reward(config):
        return {}
    judge = config.judge_endpoint()
    return {"teacher": config.teacher, "rubricator": judge, "judge": judge}


def unpriced_models(config: RunConfig) -> dict[str, str]:
    """role -> model for every role whose model has no price (its cost will show as unknown)."""
    return {role: billed_model(e, config) for role, e in role_endpoints(config).items() if price_for(e, config) is None}


def format_usd(cost: float | None) -> str:
    """A cost as text: 'unknown' when it is not known, never $0."""
    return "unknown" if cost is None else f"${cost:,.4f}" if cost < 1 else f"${cost:,.2f}"


def usage_record(usage: Usage) -> dict[str, Any]:
    """One role's usage as usage.json stores it: cost_usd null when a request went to a model without a price."""
    record = usage.model_dump()
    if not usage.cost_known:
        record["cost_usd"] = None
    return record


def usage_from_record(record: dict[str, Any]) -> Usage:
    """A role's Usage read back from usage.json (an unknown cost counts as unpriced)."""
    values = {k: v for k, v in record.items() if k in Usage.model_fields}
    if values.get("cost_usd") is None:
        values["cost_usd"] = 0.0
        values["unpriced_requests"] = max(1, values.get("unpriced_requests") or 0)
    return Usage(**values)


def known_cost(usages: dict[str, Usage]) -> float | None:
    """The summed cost of `usages`, None when any of them is unknown."""
    if not all(u.cost_known for u in usages.values()):
        return None
    return sum(u.cost_usd for u in usages.values())


# --- the estimate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lengths:
    """Tokens per item the estimate assumes."""

    rollout: float
    teacher_answer: float
    rubric_reply: float
    judge_reply: float
    criteria: float  # all criteria of one rubric, as the judge is shown them


@dataclass
class Figures:
    """Calls and tokens of one role."""

    calls: float = 0
    prompt_tokens: float = 0
    completion_tokens: float = 0

    def cost(self, price: Price | None) -> float | None:
        if price is None:
            return None if self.calls else 0.0
        return (self.prompt_tokens * price.input + self.completion_tokens * price.output) / 1e6


@dataclass
class RoleEstimate:
    """One role: its model and price, the run's upper bound, one step's upper bound, and a typical figure when known."""

    role: str
    model: str
    price: Price | None
    upper: Figures
    step: Figures
    typical: Figures | None = None


@dataclass
class RunEstimate:
    """Every paid role of a run, over `batches` rollout batches."""

    roles: list[RoleEstimate]
    batches: int
    notes: list[str] = field(default_factory=list)

    def total(self, which: str = "upper") -> float | None:
        """Summed cost ('upper', 'typical' or 'step'); None when a role's price is unknown."""
        costs = [getattr(r, which).cost(r.price) if getattr(r, which) is not None else None for r in self.roles]
        return None if any(c is None for c in costs) else sum(costs)  # type: ignore[misc]

    @property
    def has_typical(self) -> bool:
        return any(r.typical is not None for r in self.roles)


class TokenCounter:
    """Tokens of a text under a tokenizer; characters / 4 without one."""

    def __init__(self, tokenizer: Any | None):
        self.tokenizer = tokenizer

    def text(self, text: str) -> int:
        if self.tokenizer is None:
            return math.ceil(len(text) / 4)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def messages(self, messages: list[dict]) -> int:
        return sum(self.text(str(m.get("content") or "")) + MESSAGE_OVERHEAD for m in messages)


def estimate_run(
    config: RunConfig,
    prompts: list[PromptRow],
    tokenizer: Any | None,
    *,
    start_step: int = 0,
    history: Path | None = None,
) -> RunEstimate:
    """The run's API calls, tokens and cost per role from `start_step` on (see the module doc).

    `history`: a run folder whose cache and metrics.jsonl give typical lengths (default: the config's output dir)."""
    steps = max(0, config.training.max_steps - start_step)
    batches = math.ceil(steps / config.training.updates_per_batch)
    endpoints = role_endpoints(config)
    if not endpoints:
        return RunEstimate([], batches, [f"method '{config.method.name}' makes no priced API calls"])
    counter = TokenCounter(tokenizer)
    rows = prompts[:: max(1, len(prompts) // SAMPLE_PROMPTS)][:SAMPLE_PROMPTS]
    upper = upper_lengths(config)
    seen = typical_lengths(config, history or Path(config.output.dir), upper)
    unique = min(len(prompts), batches * config.training.prompts_per_step)
    roles = []
    for role, endpoint in endpoints.items():
        run_figures = role_figures(role, config, rows, counter, upper, batches, unique)
        step_figures = role_figures(role, config, rows, counter, upper, 1, min(len(prompts), config.training.prompts_per_step))
        typical = role_figures(role, config, rows, counter, seen, batches, unique) if seen is not None else None
        roles.append(RoleEstimate(role, billed_model(endpoint, config), price_for(endpoint, config), run_figures, step_figures, typical))
    return RunEstimate(roles, batches, estimate_notes(config, tokenizer is None))


def upper_lengths(config: RunConfig) -> Lengths:
    """Every rollout, teacher answer and reply at its limit."""
    judge = config.judge
    return Lengths(
        rollout=config.training.max_completion_length,
        teacher_answer=config.teacher.max_tokens,
        rubric_reply=judge.max_tokens,
        judge_reply=judge.max_tokens,
        criteria=min(judge.max_criteria * CRITERION_TOKENS, judge.max_tokens),
    )


def typical_lengths(config: RunConfig, run_dir: Path, upper: Lengths) -> Lengths | None:
    """Mean lengths an earlier run recorded (its cache, its metrics.jsonl), the upper bound where it recorded none;
    None when it recorded nothing."""
    cache = Path(config.output.cache) if config.output.cache else run_dir / "cache.sqlite"
    replies = cached_reply_tokens(cache)
    rollout = mean_rollout_length(run_dir / "metrics.jsonl")
    if not replies and rollout is None:
        return None
    rubric = replies.get("rubricator", upper.rubric_reply)
    return replace(
        upper,
        rollout=rollout if rollout is not None else upper.rollout,
        teacher_answer=replies.get("teacher", upper.teacher_answer),
        rubric_reply=rubric,
        judge_reply=replies.get("judge", upper.judge_reply),
        criteria=min(upper.criteria, rubric),
    )


def cached_reply_tokens(path: Path) -> dict[str, float]:
    """Mean completion tokens per cached result, by role, from a result cache opened read-only ({} without one)."""
    if not path.is_file():
        return {}
    try:
        rows = usage_rows(path)
    except sqlite3.DatabaseError:
        return {}
    by_role: dict[str, list[float]] = {}
    for role, usage in rows:
        tokens = usage.get("completion_tokens")
        if isinstance(tokens, (int, float)) and tokens > 0:
            by_role.setdefault(role, []).append(tokens)
    return {role: statistics.fmean(values) for role, values in by_role.items()}


def mean_rollout_length(path: Path) -> float | None:
    """The mean of TRL's completions/mean_length over an earlier run's metrics.jsonl, None without one."""
    if not path.is_file():
        return None
    values = []
    for line in path.read_text().splitlines():
        try:
            value = json.loads(line).get("completions/mean_length")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, (int, float)):
            values.append(value)
    return statistics.fmean(values) if values else None


def role_figures(
    role: str, config: RunConfig, rows: list[PromptRow], counter: TokenCounter, lengths: Lengths, batches: int, unique: int
) -> Figures:
    """Calls and tokens of `role` over `batches` rollout batches touching `unique` distinct prompts."""
    if not rows or batches == 0:
        return Figures()
    if role == "teacher":
        return teacher_figures(config, rows, counter, lengths, unique)
    if role == "rubricator":
        return rubricator_figures(config, rows, counter, lengths, batches, unique)
    return judge_figures(config, rows, counter, lengths, batches)


def teacher_figures(config: RunConfig, rows: list[PromptRow], counter: TokenCounter, lengths: Lengths, unique: int) -> Figures:
    """One request per prompt for its k answers (n = k), each answer fetched once for the whole run."""
    prompt = statistics.fmean(counter.messages([m.model_dump() for m in r.prompt]) for r in rows)
    k = config.teacher.num_answers
    return Figures(calls=unique, prompt_tokens=unique * prompt, completion_tokens=unique * k * lengths.teacher_answer)


def rubric_calls(config: RunConfig, batches: int, unique: int) -> float:
    """Rubricator calls: one per group and step, once per prompt, or one per group every N steps (judge.rubric_refresh)."""
    refresh, per_batch = config.judge.rubric_refresh, config.training.prompts_per_step
    if refresh == "prompt":
        return unique
    every = 1 if refresh == "step" else int(refresh)
    return math.ceil(batches / every) * per_batch


def rubricator_figures(
    config: RunConfig, rows: list[PromptRow], counter: TokenCounter, lengths: Lengths, batches: int, unique: int
) -> Figures:
    """The real rubricator prompt with empty answers, plus k teacher answers and G rollouts at `lengths`."""
    from ropd.reward.rubrics import rubric_messages

    k, g = config.teacher.num_answers, config.training.num_generations
    frame = statistics.fmean(counter.messages(rubric_messages(r.question, [""] * k, [""] * g, config.judge)[0]) for r in rows)
    prompt = frame + k * lengths.teacher_answer + g * lengths.rollout
    calls = rubric_calls(config, batches, unique)
    return Figures(calls=calls, prompt_tokens=calls * prompt, completion_tokens=calls * lengths.rubric_reply)


def judge_chunks(config: RunConfig, answers: int) -> list[int]:
    """The answers per judge call for one group of `answers` (ropd.reward.judge.judge_verdicts)."""
    judge = config.judge
    size = 1 if judge.mode == "single" else judge.chunk_size or answers
    return [min(size, answers - start) for start in range(0, answers, size)]


def judge_figures(config: RunConfig, rows: list[PromptRow], counter: TokenCounter, lengths: Lengths, batches: int) -> Figures:
    """The real judge prompt per call (empty answers, one-word criteria) plus the answers and criteria at `lengths`."""
    from ropd.reward.judge import verifier_messages

    judge = config.judge
    rubric = Rubric(criteria=[Criterion(id=f"c{i}", text="x", points=1) for i in range(1, judge.max_criteria + 1)])
    if judge.score_teacher_answers == "in_call":  # the teacher answers shuffled into the rollouts' call(s)
        chunks = judge_chunks(config, config.training.num_generations + config.teacher.num_answers)
    else:
        chunks = judge_chunks(config, config.training.num_generations)
    if judge.score_teacher_answers == "separate":
        chunks += judge_chunks(config, config.teacher.num_answers)
    samples = judge.consistency_samples if judge.mode == "consistency" else 1
    per_group = Figures()
    for size in chunks:
        frame = statistics.fmean(counter.messages(verifier_messages(r.question, rubric, [""] * size, judge)[0]) for r in rows)
        per_group.calls += 1
        per_group.prompt_tokens += frame + size * lengths.rollout + lengths.criteria
        per_group.completion_tokens += samples * lengths.judge_reply
    groups = batches * config.training.prompts_per_step
    return Figures(groups * per_group.calls, groups * per_group.prompt_tokens, groups * per_group.completion_tokens)


def estimate_notes(config: RunConfig, no_tokenizer: bool) -> list[str]:
    """What the estimate leaves out or assumes, for its caption."""
    notes = [
        f"prices as of {PRICES_AS_OF} (ropd/training/prices.py plus the config's `prices:`)",
        "re-asks after invalid replies not counted",
    ]
    if no_tokenizer:
        notes.append("tokens estimated as characters / 4 (the student's tokenizer could not be loaded)")
    if config.tools.names and config.tools.teacher:
        notes.append("teacher tool rounds not counted (one request per answer assumed)")
    return notes


# --- output --------------------------------------------------------------------------------------------


def _tokens(value: float) -> str:
    return f"{round(value):,}"


def print_estimate(estimate: RunEstimate, title: str, *, stderr: bool) -> None:
    """Print the estimate table whole (TABLE_WIDTH characters wide, whatever the terminal), on stdout or stderr."""
    Console(stderr=stderr, width=TABLE_WIDTH).print(estimate_table(estimate, title))


def estimate_table(estimate: RunEstimate, title: str = "estimated API usage") -> Table:
    """The estimate as a table: per role calls, tokens and cost (upper bound, and typical where known)."""
    table = Table(title=f"{title} ({estimate.batches} rollout batches)", box=box.SIMPLE_HEAD)
    columns = ["role", "model", "calls", "prompt tokens", "completion tokens", "cost (upper bound)"]
    if estimate.has_typical:
        columns += ["typical completion tokens", "typical cost"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("role", "model") else "right", no_wrap=True)
    for r in estimate.roles:
        row = [r.role, r.model, _tokens(r.upper.calls), _tokens(r.upper.prompt_tokens), _tokens(r.upper.completion_tokens)]
        row.append(format_usd(r.upper.cost(r.price)))
        if estimate.has_typical:
            typical = r.typical or r.upper
            row += [_tokens(typical.completion_tokens), format_usd(typical.cost(r.price))]
        table.add_row(*row)
    if estimate.roles:
        total = ["total", "", "", "", "", format_usd(estimate.total())]
        table.add_row(*(total + (["", format_usd(estimate.total("typical"))] if estimate.has_typical else [])))
    unknown = sorted({r.model for r in estimate.roles if r.price is None})
    notes = list(estimate.notes)
    if unknown:
        notes.insert(0, f"no price for {', '.join(unknown)}: cost unknown (add it under `prices:` in the config)")
    table.caption = "upper bound: every rollout, answer and reply at its length limit, no cache hit; " + "; ".join(notes)
    return table
