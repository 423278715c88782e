"""What a run will cost, what it spent, and its spending limit: `ropd train --dry-run`, the estimate against what a
scripted run counts, unknown prices, output.max_cost_usd.

The scripted endpoint (real HTTP, real openai client) reports usage as a tokenizer roughly would: characters / 4 of
the prompt and of each reply, so counted tokens follow the real prompts and replies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripted_pipeline import REPO, Scripted, kind_of, record_figure, settings, train_command, write_config

import ropd
from ropd.bench.report import method_summary
from ropd.report.inspect import build_report
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.training.costs import format_usd, usage_from_record, usage_record
from ropd.types import Usage

PRICE = {"input": 2.0, "output": 8.0}  # USD per million tokens of the scripted model, in the tests that price it
# limits that fit the scripted replies: teacher answers ~14 tokens, rubrics ~80, verdicts ~40
LIMITS = {"teacher.max_tokens": 24, "judge.max_tokens": 128}


def chars(text: str) -> int:
    return len(text) // 4


class Metered:
    """The scripted teacher, rubricator and judge, reporting usage as characters / 4 (plus 4 tokens per message)."""

    def __init__(self):
        self.scripted = Scripted()

    def __call__(self, body: dict) -> Reply:
        reply = self.scripted(body)
        reply = Reply(content=reply) if isinstance(reply, str) else reply
        texts = reply.content if isinstance(reply.content, list) else [reply.content]
        prompt = sum(chars(m["content"]) + 4 for m in body["messages"])
        reply.usage = (prompt, sum(chars(t) for t in texts))
        return reply


def priced_config(server: ScriptedServer, out: Path, **overrides) -> ropd.RunConfig:
    values = settings(server, out, **LIMITS, **overrides)
    return ropd.load_config(write_config(out.parent / f"{out.name}.yaml", {**values, "prices.scripted": PRICE}))


def run_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


# --- the dry run --------------------------------------------------------------------------------------------


def test_dry_run_prints_a_cost_table_with_no_network_call(tmp_path):
    """The issue's command: an API teacher, a student whose tokenizer is not here (characters / 4), nothing called."""
    with ScriptedServer(Scripted()) as server:
        env = {k: v for k, v in run_env().items() if k != "OPENAI_API_KEY"} | {"OPENAI_BASE_URL": server.base_url}
        command = [sys.executable, "-m", "ropd.cli", "train", "--dry-run", "--teacher", "gpt-4o", "--student", "qwen"]
        started = time.monotonic()
        done = subprocess.run([*command, "--output", str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path)
        seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert server.requests == [] and server.model_lists == 0  # not one request, not even the endpoint check
    table = " ".join(done.stdout.split())
    for role in ("teacher", "rubricator", "judge"):
        assert role in table
    assert "gpt-4o" in table and "500 rollout batches" in table and "total" in table
    assert "prices as of" in table and "characters / 4" in table
    assert not (tmp_path / "run").exists()  # nothing written either
    assert seconds < 60


def test_the_estimate_lies_within_2x_of_what_a_scripted_run_counts(tmp_path):
    metered = Metered()
    with ScriptedServer(metered) as server:
        config = priced_config(server, tmp_path / "run")
        estimate = ropd.dry_run(config)
        assert not estimate.has_typical  # no earlier run to go by
        ropd.train(config)
        typical = ropd.dry_run(config.model_copy(update={"output": config.output.model_copy(update={"dir": str(tmp_path / "run")})}))
    usage = {role: usage_from_record(r) for role, r in json.loads((tmp_path / "run" / "usage.json").read_text()).items()}
    for role in estimate.roles:
        spent = usage[role.role]
        assert role.upper.calls == spent.requests, role.role
        assert 0.5 <= role.upper.prompt_tokens / spent.prompt_tokens <= 2.0, (role.role, role.upper, spent)
        assert spent.completion_tokens <= role.upper.completion_tokens, (role.role, role.upper, spent)  # an upper bound
    actual = sum(u.cost_usd for u in usage.values())
    record_figure(
        "cost estimate vs scripted run",
        f"upper bound ${estimate.total():.5f}, typical ${typical.total('typical'):.5f}, counted ${actual:.5f}",
        upper=estimate.total(),
        typical=typical.total("typical"),
        counted=actual,
        roles={r.role: [r.upper.calls, round(r.upper.prompt_tokens), round(r.upper.completion_tokens)] for r in estimate.roles},
        counted_roles={k: [u.requests, u.prompt_tokens, u.completion_tokens] for k, u in usage.items()},
    )
    assert actual <= estimate.total() <= 2 * actual
    assert typical.has_typical  # the cache and metrics.jsonl of the run: mean reply lengths
    assert 0.5 * actual <= typical.total("typical") <= 2 * actual
    assert 0.5 <= typical.total("typical") / actual <= estimate.total() / actual


def test_the_estimate_follows_the_judge_mode_and_chunks(tmp_path):
    with ScriptedServer(Scripted()) as server:
        base = priced_config(server, tmp_path / "run", **{"training.num_generations": 6, "training.max_steps": 4})
        judge_calls = {}
        for mode, chunk in (("group", None), ("group", 4), ("single", 4)):
            config = base.model_copy(update={"judge": base.judge.model_copy(update={"mode": mode, "chunk_size": chunk})})
            judge_calls[(mode, chunk)] = next(r for r in ropd.dry_run(config).roles if r.role == "judge").upper.calls
    groups = 4 * 2  # steps x prompts per step
    assert judge_calls == {("group", None): groups, ("group", 4): 2 * groups, ("single", 4): 6 * groups}


# --- unknown prices -----------------------------------------------------------------------------------------


def test_an_unknown_price_is_unknown_everywhere_a_cost_appears(tmp_path, capsys):
    with ScriptedServer(Metered()) as server:
        config = ropd.load_config(overrides=settings(server, tmp_path / "run", **LIMITS, **{"training.max_steps": 1}))
        ropd.train(config)
    err = capsys.readouterr().err
    assert err.count("warning: no price for scripted") == 1
    assert "unknown" in err.split("estimated API usage")[1]  # the estimate table at the start
    assert "total cost unknown" in err  # the summary at the end
    assert "$0" not in err
    usage = json.loads((tmp_path / "run" / "usage.json").read_text())
    assert {role: u["cost_usd"] for role, u in usage.items()} == {"teacher": None, "rubricator": None, "judge": None}
    html = build_report(tmp_path / "run").read_text()
    usage_table = html.split('id="usage-table"')[1].split("</table>")[0]
    assert usage_table.count("<td>unknown</td>") == 3
    cache_table = html.split("Result cache")[1].split("</table>")[0]
    assert cache_table.count("<td>unknown</td>") == 3


def test_a_bench_arm_without_a_price_shows_an_unknown_cost():
    from ropd.bench.config import BenchConfig
    from ropd.bench.costs import arm_cost
    from ropd.bench.report import ArmResult, CurvePoint

    config = ropd.load_config(overrides={"teacher.model": "scripted", "teacher.base_url": "http://127.0.0.1:9/v1"})
    bench = BenchConfig.model_validate({"methods": ["ropd"], "base": {}, "eval": {"dataset": "x"}, "eval_every": 256})
    last = CurvePoint(step=1, samples=8, accuracy=0.0, answered=1, truncated=0, mean_completion_tokens=1, teacher_tokens=10)
    assert arm_cost(bench, config, "ropd", last, {"judge": {"cost_usd": None}}, {}) is None
    assert arm_cost(bench, config, "ropd", last, {}, {}) is None  # the teacher's tokens have no price either
    arm = ArmResult(
        method="ropd", seed=0, fingerprint="x", curve=[last], steps=1, samples=8, teacher_tokens=10, judge_tokens=5,
        judge_requests=1, cost_usd=None, wall_seconds=1, eval_seconds=0,
    )  # fmt: skip
    assert method_summary(bench, "ropd", [arm])["cost_usd_mean"] is None


def test_usage_records_keep_an_unknown_cost_unknown():
    known, unknown = Usage(requests=2, cost_usd=0.5), Usage(requests=2, unpriced_requests=2)
    assert usage_record(known)["cost_usd"] == 0.5 and usage_record(unknown)["cost_usd"] is None
    assert usage_from_record(usage_record(unknown)).cost_known is False
    assert usage_from_record(usage_record(known)) == known
    assert format_usd(None) == "unknown" and format_usd(0.0) == "$0.0000"


def test_the_shipped_price_table_names_its_month_and_a_config_extends_it():
    from ropd.training.prices import LIST_PRICES, PRICES_AS_OF

    assert PRICES_AS_OF[:4].isdigit() and PRICES_AS_OF[4] == "-"
    config = ropd.load_config(overrides={})
    assert set(LIST_PRICES) <= set(config.prices) and len(LIST_PRICES) >= 10
    tree = {"prices": {"my-model": PRICE, "gpt-4o": {"input": 1.0, "output": 1.0}}}
    extended = ropd.RunConfig.model_validate(tree).prices
    assert extended["my-model"].input == 2.0 and extended["gpt-4o"].input == 1.0 and "gpt-4o-mini" in extended


# --- the spending limit -------------------------------------------------------------------------------------


def test_max_cost_stops_with_a_checkpoint_and_a_resume_with_a_higher_limit_finishes_repeating_no_call(tmp_path):
    scripted = Metered()
    out = tmp_path / "run"
    with ScriptedServer(scripted) as server:
        values = {**settings(server, out, **LIMITS, **{"training.max_steps": 3}), "prices.scripted": PRICE}
        config_file = write_config(tmp_path / "run.yaml", values)
        step_cost = ropd.dry_run(ropd.load_config(config_file)).total("step")
        limit = round(step_cost * 1.05, 6)  # room for the first step's calls, not for a second step's on top
        first = subprocess.run(train_command(config_file, "--max-cost", str(limit)), capture_output=True, text=True, env=run_env())
        assert first.returncode == 3, first.stderr[-3000:]
        assert (out / "checkpoint-1").is_dir() and not (out / "checkpoint-2").exists() and not (out / "final").exists()
        after_first = [dict(b) for b in server.requests]
        spent_first = json.loads((out / "usage.json").read_text())
        second = subprocess.run(train_command(config_file, "--resume", "--max-cost", "1"), capture_output=True, text=True, env=run_env())
        assert second.returncode == 0, second.stderr[-3000:]
    message = " ".join(first.stderr.split())
    assert "output.max_cost_usd" in message and format_usd(limit) in message and "stopped before step 2" in message
    assert sum(u["requests"] for u in spent_first.values()) == len(after_first)  # every paid call of run 1 accounted
    bodies = [json.dumps(b, sort_keys=True) for b in server.requests]
    assert len(set(bodies)) == len(bodies)  # no call repeated after the resume
    assert sum(kind_of(b) == "teacher" for b in server.requests) == 4  # each prompt's answers fetched once
    final = json.loads((out / "usage.json").read_text())
    assert sum(u["requests"] for u in final.values()) == len(server.requests)  # the resumed run counts run 1's spend too
    assert sum(u["cost_usd"] for u in final.values()) > sum(u["cost_usd"] for u in spent_first.values())
    assert (out / "final").is_dir()


def test_max_cost_below_one_step_trains_nothing_and_needs_prices(tmp_path, capsys):
    from ropd.cli import main

    with ScriptedServer(Metered()) as server:
        values = settings(server, tmp_path / "run", **LIMITS)
        unpriced = write_config(tmp_path / "unpriced.yaml", values)
        assert main(["train", "--config", str(unpriced), "--max-cost", "5"]) == 2
        assert "output.max_cost_usd needs a price" in capsys.readouterr().err
        priced = write_config(tmp_path / "priced.yaml", {**values, "prices.scripted": PRICE})
        assert main(["train", "--config", str(priced), "--max-cost", "0.000001"]) == 3
        assert [kind_of(b) for b in server.requests] == []  # nothing paid
    assert "Nothing was trained" in " ".join(capsys.readouterr().err.split())
    assert not list((tmp_path / "run").glob("checkpoint-*"))
