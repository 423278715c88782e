"""`ropd inspect`: reports built from a real short run, from hand-made runs with known groups, and from the committed
CPU bench; the pages opened in headless Chromium (filters, lazy-loaded groups, escaping of model text)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from scripted_pipeline import CRITERIA, REPO, Scripted, kind_of, record_figure, settings

from ropd.report.inspect import build_report, safe_json
from ropd.report.records import group_row, reward_disagrees
from ropd.testing.judge_scripts import blocks, user_text
from ropd.testing.scripted_server import Reply, ScriptedServer

BENCH_CPU = REPO / "experiments" / "results" / "bench-cpu-64"  # the committed 64-sample CPU bench, made before groups.jsonl
HOSTILE = "</script><script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"
POINTS = [points for _, points in CRITERIA]


# --- hand-made runs ----------------------------------------------------------------------------------


def group(step: int, pid: str, rewards: list[float] | None, correct: list[bool] | None, text: str = "", **extra) -> dict:
    """One groups.jsonl record with 3 criteria (the second decided by code) and evidence fields."""
    n = len(rewards) if rewards is not None else 2
    record = {
        "step": step,
        "prompt_id": pid,
        "question": f"Question of {pid}. {text}",
        "teacher_answers": [f"Teacher says 42 for {pid}. {text}"],
        "rollouts": [f"rollout {i} of {pid} at step {step}. {text}" for i in range(n)],
        "rubric": [{"id": f"c{j}", "text": f"criterion {j} {text}", "points": j + 1} for j in range(3)],
        "decided_by": ["judge", "target", "judge"],
        "verdicts": [[True, i % 2 == 0, False] for i in range(n)] if rewards is not None else None,
        "judge_verdicts": [[True, True, False] for _ in range(n)] if rewards is not None else None,
        "evidence": [{"final_answer": f"{i} {text}"} for i in range(n)] if rewards is not None else None,
        "rewards": rewards,
        "correct": correct,
        "error": None if rewards is not None else f"judge: no verdicts {text}",
        "failed_phase": None if rewards is not None else "judge",
    }
    record.update(extra)
    return record


def make_run(folder: Path, records: list[dict], steps: int) -> Path:
    """A run folder as ropd train leaves it (config, metrics, usage, groups), from the given group records."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "method": {"name": "ropd"},
        "teacher": {"model": "scripted", "base_url": "http://user:hunter2@127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY"},
        "student": {"model": "tiny-random"},
        "training": {"max_steps": steps},
        "prices": {"gpt-4o": {"input": 2.5, "output": 10}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with (folder / "metrics.jsonl").open("w") as sink:
        for step in range(1, steps + 1):
            record = {"step": step, "reward": 0.5 + 0.1 * (step % 3), "reward_std": 0.1, "loss": 0.01, "rubric/group_failure_rate": 0.0}
            record.update({"time/sample": 1.0, "time/reward": 2.0, "time/update": 0.5, "quality/pairwise_acc": 0.5, "quality/auc": 0.6})
            sink.write(json.dumps(record) + "\n")
    usage = {"judge": {"requests": 3, "cache_hits": 1, "retries": 0, "failures": 0, "prompt_tokens": 100, "completion_tokens": 20}}
    (folder / "usage.json").write_text(json.dumps(usage))
    with (folder / "groups.jsonl").open("w") as sink:
        sink.writelines(json.dumps(r) + "\n" for r in records)
    return folder


def known_groups() -> list[dict]:
    """Step 1: a right answer ranked above a wrong one; a tie between right and wrong (disagrees); a failed group.
    Step 2: a wrong answer above a right one (disagrees); a group without labels; a hostile text."""
    return [
        group(1, "alpha", [1.0, 0.2], [True, False]),
        group(1, "beta", [0.5, 0.5], [True, False]),
        group(1, "gamma", None, None),
        group(2, "alpha", [0.1, 0.9], [True, False]),
        group(2, "delta", [0.3, 0.6], None),
        group(2, "needle-prompt", [0.0, 1.0], [False, False], text=HOSTILE),
    ]


@pytest.fixture()
def known_report(tmp_path) -> Path:
    run = make_run(tmp_path / "run", known_groups(), steps=2)
    return build_report(run, tmp_path / "report")


def page_data(index: Path) -> dict:
    match = re.search(r'<script type="application/json" id="ropd-groups"[^>]*>(.*?)</script>', index.read_text(), re.DOTALL)
    assert match, "no embedded group list"
    return json.loads(match.group(1))


# --- units -------------------------------------------------------------------------------------------


def test_safe_json_cannot_close_a_script_element():
    text = safe_json({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


def test_disagreement_is_a_wrong_rollout_scored_at_least_as_high_as_a_right_one():
    assert not reward_disagrees([1.0, 0.2], [True, False])
    assert reward_disagrees([0.5, 0.5], [True, False])  # a tie is a miss
    assert reward_disagrees([0.1, 0.9], [True, False])
    assert not reward_disagrees([0.0, 1.0], [False, False])  # nothing to compare
    assert not reward_disagrees(None, [True, False])
    assert group_row(group(1, "x", [0.5, 0.5], [True, False]), 0)["disagree"] is True


def test_group_record_of_a_scored_group_and_of_a_failed_one():
    from ropd.config import PUBLISHED_JUDGE, JudgeConfig
    from ropd.reward.groups import GroupRun, group_record
    from ropd.reward.scoring import score_verdicts
    from ropd.types import GroupScore, Rubric, Verdict

    rubric = Rubric.model_validate({"criteria": [{"id": "c1", "text": "right", "points": 3}, {"id": "c2", "text": "short", "points": 1}]})
    verdicts = [Verdict(answer=1, met=[True, True], final_answer="42"), Verdict(answer=2, met=[False, True], final_answer="7")]
    scored = score_verdicts(rubric, verdicts, ["42", "7"], ["42"], JudgeConfig(**PUBLISHED_JUDGE))
    run = GroupRun(score=GroupScore(prompt_id="p", rewards=scored.rewards, verdicts=scored.met, rubric=scored.rubric), indices=[0, 1])
    run.question, run.rollouts, run.teacher_answers, run.correct = "Q?", ["42", "7"], ["42"], [True, False]
    run.verdicts, run.scored = verdicts, scored
    record = json.loads(json.dumps(group_record(run, 3)))
    assert record["step"] == 3 and record["rewards"] == [1.0, 0.25]
    assert record["advantages"] == pytest.approx([0.375, -0.375])
    assert record["rubric"][0] == {"id": "c1", "category": "", "text": "right", "points": 3}
    assert record["evidence"] == [{"final_answer": "42"}, {"final_answer": "7"}]
    assert record["correct"] == [True, False] and record["error"] is None

    error = "judge: 401 for https://bob:s3cret@api.example/v1 Bearer sk-abcdefghijkl"
    failed = GroupRun(score=GroupScore(prompt_id="p", error=error), indices=[0])
    failed.failed_phase = "judge"
    record = group_record(failed, 1)
    assert record["rewards"] is None and record["advantages"] is None and record["failed_phase"] == "judge"
    assert "s3cret" not in record["error"] and "sk-abcdefghijkl" not in record["error"] and "api.example" in record["error"]

    flat = GroupRun(score=GroupScore(prompt_id="p", rewards=[0.5, 0.5 + 1e-9]), indices=[0, 1])
    assert group_record(flat, 1)["advantages"] == [0.0, 0.0]


# --- reports from hand-made runs ---------------------------------------------------------------------------


def test_run_report_lists_every_group_with_its_flags_and_escapes_model_text(known_report):
    page = known_report.read_text()
    data = page_data(known_report)
    rows = {(r["step"], r["pid"]): r for r in data["rows"]}
    assert len(rows) == 6 and data["steps"] == [1, 2] and data["inline"] is True
    assert [pid for (_, pid), r in rows.items() if r.get("disagree")] == ["beta", "alpha"]
    assert rows[(1, "gamma")]["failed"] and "no verdicts" in rows[(1, "gamma")]["error"]
    assert not rows[(1, "beta")]["spread"] and rows[(1, "alpha")]["spread"]
    assert "disagree" not in rows[(2, "delta")]  # no labels: no claim either way
    # Model text is data: never raw in the page, and the embedded JSON cannot close its script element.
    assert "document.title='PWNED'</script>" not in page and "<img src=x" not in page
    assert "\\u003c/script\\u003e\\u003cscript\\u003e" in page
    # The full records are embedded (small run), with advantages computed for records written without them.
    details = json.loads(re.search(r'id="ropd-details">(.*?)</script>', page, re.DOTALL).group(1))
    assert details[0]["advantages"] == pytest.approx([0.4, -0.4])
    # Summary, usage, curves; credentials in a config URL are masked; price tables left out.
    assert "hunter2" not in page and "http://***@127.0.0.1:9/v1" in page and "gpt-4o" not in page
    assert 'id="usage-table"' in page and page.count("<svg") == 5 and "Step time by phase" in page


def test_a_large_run_is_paged_and_chunked_and_builds_in_seconds(tmp_path):
    steps, per_step = 500, 8
    filler = "x" * 400
    records = [
        group(step, f"p{g}", [0.1 * (i % 4) for i in range(8)], [i % 3 == 0 for i in range(8)], text=filler)
        for step in range(1, steps + 1)
        for g in range(per_step)
    ]
    run = make_run(tmp_path / "big", records, steps)
    started = time.perf_counter()
    index = build_report(run, tmp_path / "report")
    seconds = time.perf_counter() - started
    chunks = sorted((tmp_path / "report" / "data").glob("groups-*.js"))
    page_mb = index.stat().st_size / 1e6
    total_mb = sum(p.stat().st_size for p in chunks) / 1e6
    built = f"built in {seconds:.1f} s; index.html {page_mb:.2f} MB; {len(chunks)} data files, {total_mb:.1f} MB"
    record_figure("inspect, 500-step run", f"{len(records)} groups: {built}", seconds=round(seconds, 1), index_mb=round(page_mb, 1))
    data = page_data(index)
    assert len(data["rows"]) == steps * per_step and data["inline"] is False and data["chunks"] == len(chunks) > 10
    assert page_mb < 3.0  # the list only: full records load when a group is opened
    assert seconds < 60
    last = data["rows"][-1]
    chunk = chunks[last["chunk"]].read_text()
    assert chunk.startswith(f"window.ropdReceive({last['chunk']},")
    records_in_chunk = json.loads(chunk[chunk.index(",") + 1 : chunk.rindex(")")])
    assert records_in_chunk[last["at"]]["step"] == steps and records_in_chunk[last["at"]]["prompt_id"] == last["pid"]


def test_a_run_without_group_records_says_so(tmp_path):
    run = make_run(tmp_path / "old", [], steps=3)
    (run / "groups.jsonl").unlink()
    page = build_report(run).read_text()
    assert 'id="no-groups"' in page and "no per-group records" in page and 'id="ropd-groups"' not in page


def test_bench_page_from_the_committed_cpu_bench(tmp_path):
    results = json.loads((BENCH_CPU / "results.json").read_text())
    page = build_report(BENCH_CPU, tmp_path / "bench").read_text()
    assert page.count("no per-group records (run folder not kept, none in steps/)") == len(results["arms"]) == 12
    seeds = re.search(r'<table class="grid-table" id="seed-table">(.*?)</table>', page, re.DOTALL).group(1)
    assert seeds.count("<tr>") == 1 + 12
    assert "rubric OPD" in page and "not reached" in page and page.count("<svg") == 2
    assert "35.8%" in page  # logit OPD's final mean accuracy
    assert not (BENCH_CPU / "report").exists()


def test_bench_page_opens_each_arm_from_the_records_committed_in_steps(tmp_path):
    bench_dir = REPO / "experiments" / "results" / "bench-cpu-truncated"  # arms/ not committed, steps/ committed
    results = json.loads((bench_dir / "results.json").read_text())
    page = build_report(bench_dir, tmp_path / "bench").read_text()
    assert page.count('class="arm-link"') == len(results["arms"]) == 12 and "run folder not kept" not in page
    arm_page = tmp_path / "bench" / "arms" / "ropd-seed0" / "index.html"
    assert len(page_data(arm_page)["rows"]) == 16  # 8 steps x 2 prompt groups, from steps/ropd-seed0-groups.jsonl
    assert not (bench_dir / "report").exists()


def test_bench_page_links_each_kept_arm_to_its_run_report(tmp_path):
    bench = tmp_path / "bench"
    shutil.copytree(BENCH_CPU, bench, ignore=shutil.ignore_patterns("*.png", "ropd-seed0-*"))
    arm = make_run(bench / "arms" / "ropd-seed1", known_groups(), steps=2)
    (arm / "curve.jsonl").write_text("".join(json.dumps({"step": k, "samples": 16 * k, "accuracy": 0.1 * k}) + "\n" for k in (1, 2)))
    make_run(bench / "arms" / "opd-seed1", [], steps=2).joinpath("groups.jsonl").unlink()
    page = build_report(bench, tmp_path / "out").read_text()
    assert 'href="arms/ropd-seed1/index.html"' in page and 'href="arms/opd-seed1/index.html"' in page
    arm_page = (tmp_path / "out" / "arms" / "ropd-seed1" / "index.html").read_text()
    assert 'href="../../index.html"' in arm_page and len(page_data(tmp_path / "out" / "arms" / "ropd-seed1" / "index.html")["rows"]) == 6
    assert "Held-out accuracy (bench evaluation)" in arm_page and arm_page.count("<svg") == 6
    assert page.count("no per-group records (run folder not kept, none in steps/)") == 10 and page.count("no per-group records<") == 1


def test_a_bench_still_running_gets_a_page_from_its_arms(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(BENCH_CPU / "bench.yaml", bench / "bench.yaml")
    finished = json.loads((BENCH_CPU / "results.json").read_text())["arms"][0]  # opd seed 0
    (bench / "arms" / "opd-seed0").mkdir(parents=True)
    (bench / "arms" / "opd-seed0" / "arm.json").write_text(json.dumps(finished))
    running = make_run(bench / "arms" / "ropd-seed0", known_groups(), steps=2)
    (running / "curve.jsonl").write_text(json.dumps({"step": 1, "samples": 16, "accuracy": 0.125}) + "\n")
    page = build_report(bench, tmp_path / "out").read_text()
    assert "results.json is not written yet" in page and "smollm2-135m" in page
    seeds = re.search(r'id="seed-table">(.*?)</table>', page, re.DOTALL).group(1)
    assert seeds.count("<tr>") == 3 and "35.0%" in seeds and "12.5%" in seeds
    assert 'href="arms/ropd-seed0/index.html"' in page and "unfinished" in page
    assert (tmp_path / "out" / "arms" / "ropd-seed0" / "index.html").is_file()


def test_cli_inspect(tmp_path):
    run = make_run(tmp_path / "run", known_groups(), steps=2)
    done = subprocess.run(
        [sys.executable, "-m", "ropd.cli", "inspect", str(run), "--output", str(tmp_path / "r")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "r" / "index.html")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([sys.executable, "-m", "ropd.cli", "inspect", str(empty)], capture_output=True, text=True)
    assert bad.returncode == 2 and "neither a run folder" in bad.stderr


# --- a real short run ------------------------------------------------------------------------------


class Hostile(Scripted):
    """The scripted pipeline, with model text that tries to run script in a page: teacher answers and judge evidence."""

    def __call__(self, body: dict):
        reply = super().__call__(body)
        kind = kind_of(body)
        if kind == "teacher":
            return Reply(content=[f"{HOSTILE} Sample {i}: the total is 5." for i in range(body.get("n", 1))], usage=(12, 30))
        if kind == "judge":
            verdicts = json.loads(reply)["verdicts"]
            answers = blocks(user_text(body), "ANSWER")
            for verdict in verdicts:
                verdict["final_answer"] = f"<b>{len(answers[str(verdict['answer'])])}</b>"
            return json.dumps({"verdicts": verdicts})
        return reply


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """Two steps of 2 prompts x 3 rollouts: tiny random student, scripted teacher/rubricator/judge over HTTP."""
    from ropd.config import PUBLISHED_JUDGE, load_config
    from ropd.training.run import train

    root = tmp_path_factory.mktemp("inspect-run")
    dataset = root / "prompts.jsonl"
    rows = [
        {"id": "sum-a", "prompt": f"What is 2 + 3? {HOSTILE}", "answer": "5"},
        {"id": "sum-b", "prompt": "What is 4 + 1?", "answer": "5"},
    ]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "run"
    with ScriptedServer(Hostile()) as server:
        published = {f"judge.{k}": v for k, v in PUBLISHED_JUDGE.items()}  # records of the judge's booleans only
        train(load_config(overrides=settings(server, out, **{"data.dataset": str(dataset), "training.save_steps": 5}, **published)))
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_real_run_writes_one_group_record_per_step_and_prompt(real_run):
    records = [json.loads(line) for line in (real_run / "groups.jsonl").read_text().splitlines()]
    metrics = {m["step"]: m for m in map(json.loads, (real_run / "metrics.jsonl").read_text().splitlines()) if "reward" in m}
    assert sorted((r["step"], r["prompt_id"]) for r in records) == [(1, "sum-a"), (1, "sum-b"), (2, "sum-a"), (2, "sum-b")]
    for step, logged in metrics.items():
        rewards = [x for r in records if r["step"] == step for x in r["rewards"]]
        assert logged["reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
    for r in records:
        assert [c["text"] for c in r["rubric"]] == [text for text, _ in CRITERIA] and r["decided_by"] == ["judge"] * 4
        assert len(r["rollouts"]) == 3 and len(r["verdicts"]) == 3 and all(len(v) == 4 for v in r["verdicts"])
        for met, reward in zip(r["verdicts"], r["rewards"], strict=True):
            assert reward == pytest.approx(sum(p for p, ok in zip(POINTS, met, strict=True) if ok) / sum(POINTS))
        assert sum(r["advantages"]) == pytest.approx(0.0, abs=1e-9)
        assert len(r["correct"]) == 3 and r["teacher_correct"] == [True, True]
        assert r["teacher_answers"][0].startswith(HOSTILE) and r["evidence"][0]["final_answer"].startswith("<b>")
    text = (real_run / "groups.jsonl").read_text()
    assert "127.0.0.1" not in text and "api_key" not in text.lower()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_report_of_a_real_run(real_run, tmp_path):
    started = time.perf_counter()
    index = build_report(real_run, tmp_path / "report")
    record_figure("inspect, real 2-step run", f"report built in {time.perf_counter() - started:.2f} s, {index.stat().st_size / 1e3:.0f} kB")
    page = index.read_text()
    data = page_data(index)
    assert sorted((r["step"], r["pid"]) for r in data["rows"]) == [(1, "sum-a"), (1, "sum-b"), (2, "sum-a"), (2, "sum-b")]
    assert all(r["n"] == 3 and r["right"] is not None for r in data["rows"])
    assert "<script>document.title" not in page and "<img src=x" not in page and "\\u003cb\\u003e" in page
    for role in ("teacher", "rubricator", "judge"):
        assert f"<td>{role}</td>" in page
    assert "Reward per step" in page and "Step time by phase" in page and "max_steps" in page


# --- in a browser -------------------------------------------------------------------------------------


def chromium() -> str:
    """The Chromium binary; a failure naming the package when absent (`make test` installs it first: `make browser`)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    pytest.fail("Chromium is not installed: `make browser` installs it (as root: apt-get install chromium); the browser checks need it")


def browse(index: Path, fragment: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM of `index#fragment` after its scripts ran (or a screenshot of it), from headless Chromium."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--window-size=1400,1800",
    ]
    command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    url = index.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def shown_rows(dom: str) -> list[str]:
    """The data-key of every row the group table shows."""
    body = re.search(r'<tbody id="group-rows">(.*?)</tbody>', dom, re.DOTALL)
    assert body, "the group table did not render"
    return re.findall(r'<tr data-key="(\d+)"', body.group(1))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_renders_a_real_run_report_and_runs_no_model_text(real_run, tmp_path):
    index = build_report(real_run, tmp_path / "report")
    rows = page_data(index)["rows"]
    shot = tmp_path / "run.png"
    browse(index, "", tmp_path / "profile", screenshot=shot)
    assert shot.is_file() and shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    dom = browse(index, "", tmp_path / "profile")
    assert len(shown_rows(dom)) == 4 and "4 of 4 groups" in dom
    assert "<title>PWNED" not in dom and "<title>ropd run" in dom

    hostile = next(r for r in rows if r["step"] == 2 and r["pid"] == "sum-a")
    dom = browse(index, f"step=2&open={hostile['key']}", tmp_path / "profile")
    assert sorted(rows[int(k)]["step"] for k in shown_rows(dom)) == [2, 2]
    detail = re.search(r'<div class="detail" id="detail">(.*)', dom, re.DOTALL)
    assert detail, "the opened group's detail did not render"
    matrix = re.search(r'<table class="grid-table matrix" id="verdict-matrix">(.*?)</table>', detail.group(1), re.DOTALL).group(1)
    assert matrix.count("<tr") == 1 + 3 and matrix.count("✓") + matrix.count("✗") == 3 * 4
    # The hostile question, teacher answers and evidence show as text; none of it ran or became an element.
    assert "&lt;/script&gt;&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in detail.group(1)
    assert "&lt;b&gt;" in matrix and "<b>" not in detail.group(1)
    assert "<title>PWNED" not in dom and "<img src=" not in dom


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_filters_and_lazy_loaded_groups(known_report, tmp_path):
    rows = page_data(known_report)["rows"]
    key = {(r["step"], r["pid"]): r["key"] for r in rows}
    dom = browse(known_report, "disagree=1", tmp_path / "profile")
    assert sorted(shown_rows(dom)) == sorted([str(key[(1, "beta")]), str(key[(2, "alpha")])]) and "2 of 6 groups" in dom
    dom = browse(known_report, "q=needle", tmp_path / "profile")
    assert shown_rows(dom) == [str(key[(2, "needle-prompt")])]
    dom = browse(known_report, "failed=1", tmp_path / "profile")
    assert shown_rows(dom) == [str(key[(1, "gamma")])]
    dom = browse(known_report, f"open={key[(1, 'gamma')]}", tmp_path / "profile")
    assert "No reward for this group (judge): judge: no verdicts" in dom

    # A 500-step run, too large to embed: 50 groups per page, records loaded from data/*.js when a group is opened.
    records = [group(s, f"p{g}", [0.1 * g, 0.5], [g % 2 == 0, True], text="y" * 300) for s in range(1, 501) for g in range(4)]
    index = build_report(make_run(tmp_path / "big", records, steps=500), tmp_path / "big-report")
    big = page_data(index)
    assert big["inline"] is False
    started = time.perf_counter()
    dom = browse(index, "page=3", tmp_path / "profile")
    seconds = time.perf_counter() - started
    text = f"{len(records)} groups: opened, rendered and dumped by headless Chromium in {seconds:.1f} s"
    record_figure("inspect, 500-step report in a browser", text, seconds=round(seconds, 1))
    assert len(shown_rows(dom)) == 50 and "page 3 of 40" in dom
    last = big["rows"][-1]
    dom = browse(index, f"step=500&open={last['key']}", tmp_path / "profile")
    assert len(shown_rows(dom)) == 4 and 'id="verdict-matrix"' in dom and f"rollout 1 of {last['pid']} at step 500" in dom


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_renders_the_bench_page(tmp_path):
    index = build_report(BENCH_CPU, tmp_path / "bench")
    dom = browse(index, "", tmp_path / "profile")
    assert dom.count("<svg") == 2 and 'id="seed-table"' in dom and "<title>ropd bench" in dom
    shot = tmp_path / "bench.png"
    browse(index, "", tmp_path / "profile", screenshot=shot)
    assert shot.stat().st_size > 20_000
