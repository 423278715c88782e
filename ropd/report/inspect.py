"""`ropd inspect`: a static HTML report of a run or a bench, read from what they already wrote.

    build_report("runs/default")             # -> runs/default/report/index.html
    build_report("runs/bench", "bench-report")

A run folder gives the run page: config summary, usage per role, cache rows, curves (reward, quality,
groups without spread or failed, loss, step times) as inline SVG, and every group of every step from
groups.jsonl (question, teacher answers, rubric, verdict matrix with evidence fields, rewards,
advantages, correctness) with paging and filters (step, text, "reward disagreed with correctness",
failed). A bench folder (results.json) gives the bench page: curves, per-method and per-seed tables,
links to each arm's run page where its run folder was kept.

The report is a folder that opens from disk: index.html with its CSS and JS inline and the group list
embedded as JSON; the groups' full records are embedded too when small, else written beside it as
data/groups-NNNN.js files that the page loads when a group is opened (classic scripts load from
file://, where fetch cannot). All model text reaches the page as JSON data or through Jinja's
autoescape, and the page's script inserts it with textContent only, never as HTML. The charts (inline SVG)
are drawn by `ropd.report.charts`.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, Undefined
from markupsafe import Markup

from ropd.report.charts import METHOD_LABELS, bench_charts, run_charts
from ropd.report.records import (
    cache_summary,
    config_summary,
    group_row,
    latest_groups,
    read_jsonl,
    step_records,
    with_advantages,
)

REPORT_DIR = Path(__file__).resolve().parent  # templates, CSS and JS: package data beside this module
INLINE_DETAIL_BYTES = 1_500_000  # full group records up to this size are embedded in index.html, else chunked
CHUNK_BYTES = 400_000  # target size of one data/groups-NNNN.js file
GROUP_TIMES = ("time/teacher", "time/rubric", "time/judge")


class InspectError(ValueError):
    """A folder that holds neither a run nor a bench, or files that cannot be read; the message says which."""


# --- entry point -----------------------------------------------------------------------------------


def build_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a run or bench folder into `out` (default: <path>/report); return its index.html."""
    path = Path(path)
    if not path.is_dir():
        raise InspectError(f"{path}: not a folder (give a run's output dir or a bench's output_dir)")
    target = Path(out) if out is not None else path / "report"
    if is_bench_dir(path):
        return build_bench_report(path, target)
    if is_run_dir(path):
        return build_run_report(path, target)
    raise InspectError(f"{path}: neither a run folder (metrics.jsonl, config.yaml or groups.jsonl) nor a bench folder (results.json)")


def is_bench_dir(path: Path) -> bool:
    """A bench's output_dir: results.json, or (a bench still running or stopped early) bench.yaml and arms/."""
    return (path / "results.json").is_file() or ((path / "bench.yaml").is_file() and (path / "arms").is_dir())


def partial_bench_results(bench_dir: Path) -> dict[str, Any]:
    """What a bench without results.json has so far: its settings (bench.yaml) and each arm's result (arm.json) or,
    for an arm still training, its held-out points (curve.jsonl)."""
    try:
        bench = yaml.safe_load((bench_dir / "bench.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InspectError(f"{bench_dir / 'bench.yaml'}: cannot be read: {exc}") from None
    base = bench.get("base") or {}
    training = base.get("training") or {}
    arms = []
    for folder in sorted((bench_dir / "arms").iterdir()):
        arm_name, _, seed = folder.name.rpartition("-seed")
        method = ((bench.get("arms") or {}).get(arm_name) or {}).get("method", arm_name)
        if not folder.is_dir() or not method or not seed.isdigit():
            continue
        if (folder / "arm.json").is_file():
            arms.append(json.loads((folder / "arm.json").read_text()))
        else:
            curve = read_jsonl(folder / "curve.jsonl")[0]
            arms.append({"arm": arm_name, "method": method, "seed": int(seed), "curve": curve, "unfinished": True})
    return {
        "headline": {"ratio": None, "status": "not computed", "note": "results.json is not written yet (the bench is running or stopped)"},
        "complete": False,
        "student": (base.get("student") or {}).get("model"),
        "teacher": (base.get("teacher") or {}).get("model"),
        "judge": bench.get("judge"),
        "train_dataset": (base.get("data") or {}).get("dataset"),
        "eval": bench.get("eval") or {},
        "budget": {
            "prompts_per_step": training.get("prompts_per_step"),
            "num_generations": training.get("num_generations"),
            "max_steps": training.get("max_steps"),
            "learning_rate": training.get("learning_rate"),
            "eval_every": bench.get("eval_every"),
            "seeds": bench.get("seeds") or [],
        },
        "methods": {},
        "arms": arms,
    }


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in ("metrics.jsonl", "config.yaml", "groups.jsonl"))


# --- JSON in pages and scripts --------------------------------------------------------------------------


def safe_json(value: Any) -> str:
    """JSON that cannot end a <script> element or an HTML comment: <, >, & and the JS line separators escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _finite(value: Any) -> Any:
    """NaN and infinities become None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def chunk_records(records: list[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    """Consecutive records in chunks of about `limit` bytes of JSON each (at least one record per chunk)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for record in records:
        length = len(safe_json(record))
        if chunks[-1] and size + length > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(record)
        size += length
    return [c for c in chunks if c]


# --- pages -----------------------------------------------------------------------------------------


def environment() -> Environment:
    """Jinja environment over the report templates, autoescaping everything."""
    env = Environment(loader=FileSystemLoader(REPORT_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["usd"] = _usd
    return env


def _usd(value: Any) -> str:
    """A cost cell: 'unknown' when the run recorded it as unknown (null: a model without a price), a dash when absent."""
    if isinstance(value, Undefined):
        return "–"
    return "unknown" if value is None else _num(value, 4)


def _pct(value: Any) -> str:
    return "–" if value is None or isinstance(value, Undefined) else f"{100 * value:.1f}%"


def _num(value: Any, digits: int = 3) -> str:
    """A number for a table cell: thousands separated, `digits` decimals for floats, a dash when missing (old files)."""
    if value is None or isinstance(value, Undefined):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _assets() -> dict[str, Markup]:
    """The page's own CSS and JS, inlined (trusted files of this package, not data)."""
    return {"css": Markup((REPORT_DIR / "report.css").read_text()), "js": Markup((REPORT_DIR / "report.js").read_text())}


def build_run_report(run_dir: Path, out: Path, title: str | None = None, back: str | None = None) -> Path:
    """Write the run page (and its data files) into `out`; return index.html."""
    started = time.perf_counter()
    metrics, bad_metrics = read_jsonl(run_dir / "metrics.jsonl")
    steps = [_finite(s) for s in step_records(metrics)]
    groups_file = run_dir / "groups.jsonl"
    raw_groups, bad_groups = read_jsonl(groups_file)
    groups = [with_advantages(_finite(g)) for g in latest_groups(raw_groups)]
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((run_dir / "config.yaml").read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError as exc:
            raise InspectError(f"{run_dir / 'config.yaml'}: not valid YAML: {exc}") from None
    usage: dict[str, Any] = {}
    if (run_dir / "usage.json").is_file():
        try:
            usage = json.loads((run_dir / "usage.json").read_text())
        except json.JSONDecodeError as exc:
            raise InspectError(f"{run_dir / 'usage.json'}: not valid JSON: {exc}") from None
    cache_path = Path(str((config.get("output") or {}).get("cache") or run_dir / "cache.sqlite"))
    if not cache_path.is_absolute() and not cache_path.is_file():
        cache_path = run_dir / cache_path.name

    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    for old in data_dir.glob("groups-*.js") if data_dir.is_dir() else []:
        old.unlink()  # a rebuilt report must not mix in chunks of an earlier one
    rows = [group_row(g, i) for i, g in enumerate(groups)]
    details_size = sum(len(safe_json(g)) for g in groups)
    chunks = chunk_records(groups, CHUNK_BYTES) if details_size > INLINE_DETAIL_BYTES else [groups]
    position = 0
    for number, chunk in enumerate(chunks):
        for offset in range(len(chunk)):
            rows[position + offset].update(chunk=number, at=offset)
        position += len(chunk)
    inline = details_size <= INLINE_DETAIL_BYTES
    if not inline:
        data_dir.mkdir(exist_ok=True)
        for number, chunk in enumerate(chunks):
            (data_dir / f"groups-{number:04d}.js").write_text(f"window.ropdReceive({number},{safe_json(chunk)});\n", encoding="utf-8")

    last = steps[-1] if steps else {}
    scored = [g for g in groups if g.get("rewards") is not None]
    labelled = [g for g in groups if g.get("correct") is not None]
    stats = {
        "steps": len([s for s in steps if "reward" in s or "loss" in s]),
        "groups": len(groups),
        "failed": len(groups) - len(scored),
        "no_spread": sum(not r.get("spread", False) for r in rows if not r["failed"]),
        "disagree": sum(bool(r.get("disagree")) for r in rows),
        "labelled": len(labelled),
        "rollouts": sum(r["n"] for r in rows),
        "runtime": last.get("train_runtime"),
    }
    group_times = {
        key.removeprefix("time/"): statistics.fmean(vals) for key in GROUP_TIMES if (vals := [s[key] for s in steps if key in s])
    }
    page_data = {
        "rows": rows,
        "chunks": len(chunks),
        "inline": inline,
        "steps": sorted({r["step"] for r in rows if r["step"] is not None}),
    }
    notes = []
    if bad_metrics or bad_groups:
        notes.append(f"skipped unreadable lines: {bad_metrics} in metrics.jsonl, {bad_groups} in groups.jsonl (a run stopped mid-write?)")
    page = (
        environment()
        .get_template("run.html.jinja")
        .render(
            title=title or f"ropd run: {run_dir.name}",
            run_dir=str(run_dir),
            back=back,
            generated=time.strftime("%Y-%m-%d %H:%M:%S"),
            method=(config.get("method") or {}).get("name"),
            sections=config_summary(config),
            usage=usage,
            cache=cache_summary(cache_path),
            stats=stats,
            group_times=group_times,
            charts=run_charts(steps, read_jsonl(run_dir / "curve.jsonl")[0]),
            has_groups=groups_file.is_file(),
            notes=notes,
            groups_json=Markup(safe_json(page_data)),
            details_json=Markup(safe_json(groups)) if inline else None,
            page_size=50,
            **_assets(),
        )
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    _log_built(index, started)
    return index


def _log_built(index: Path, started: float) -> None:
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file() and p.suffix in (".html", ".js"))
    from rich.console import Console

    message = f"report: {index} ({size / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s)"
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)


STEP_RECORDS = ("metrics.jsonl", "groups.jsonl", "usage.json", "config.yaml")


@contextlib.contextmanager
def arm_records(bench_dir: Path, folder: Path, name: str) -> Iterator[Path | None]:
    """A run folder for an arm's run page: the arm's own folder when it was kept, else a temporary one holding links to
    the records the bench copied into steps/ (<name>-metrics.jsonl, -groups.jsonl, -usage.json), which are committed
    with the results; None when neither exists."""
    if folder.is_dir() and is_run_dir(folder):
        yield folder
        return
    found = {f: bench_dir / "steps" / f"{name}-{f}" for f in STEP_RECORDS if (bench_dir / "steps" / f"{name}-{f}").is_file()}
    if not found:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ropd-arm-") as tmp:
        for file_name, source in found.items():
            (Path(tmp) / file_name).symlink_to(source.resolve())
        yield Path(tmp)


def build_bench_report(bench_dir: Path, out: Path) -> Path:
    """Write the bench page, and the run page of every arm whose folder was kept, into `out`; return index.html."""
    started = time.perf_counter()
    if (bench_dir / "results.json").is_file():
        try:
            results = _finite(json.loads((bench_dir / "results.json").read_text()))
        except json.JSONDecodeError as exc:
            raise InspectError(f"{bench_dir / 'results.json'}: not valid JSON: {exc}") from None
    else:
        results = _finite(partial_bench_results(bench_dir))
    out.mkdir(parents=True, exist_ok=True)
    arms = []
    samples = sorted({p["samples"] for a in results.get("arms") or [] for p in a.get("curve") or []})
    for arm in results.get("arms") or []:
        name = f"{arm.get('arm') or arm['method']}-seed{arm['seed']}"
        folder = bench_dir / "arms" / name
        row = {**arm, "name": name, "link": None, "note": "", "by_samples": {p["samples"]: p["accuracy"] for p in arm.get("curve") or []}}
        row["minutes"] = arm["wall_seconds"] / 60 if isinstance(arm.get("wall_seconds"), (int, float)) else None
        with arm_records(bench_dir, folder, name) as records:
            if records is not None:
                build_run_report(records, out / "arms" / name, title=f"ropd bench arm: {name}", back="../../index.html")
                row["link"] = f"arms/{name}/index.html"
                if not (records / "groups.jsonl").is_file():
                    row["note"] = "no per-group records"
                if arm.get("unfinished"):
                    row["note"] = ("unfinished; " + row["note"]).rstrip("; ")
            else:
                row["note"] = "no per-group records (run folder not kept, none in steps/)"
        arms.append(row)
    page = (
        environment()
        .get_template("bench.html.jinja")
        .render(
            title=f"ropd bench: {bench_dir.name}",
            bench_dir=str(bench_dir),
            generated=time.strftime("%Y-%m-%d %H:%M:%S"),
            results=results,
            labels=METHOD_LABELS,
            charts=bench_charts(results),
            arms=arms,
            samples=samples,
            **_assets(),
        )
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    _log_built(index, started)
    return index
