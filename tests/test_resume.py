"""Safe resume: `--resume` holds a run to the config it was started with, and continues it without `--config`.

Runs go through `ropd.cli.main` in-process against the scripted endpoint (real HTTP) with the tiny random student.
"""

from __future__ import annotations

import json

import pytest
from scripted_pipeline import Scripted, settings, write_config

from ropd.cli import main
from ropd.cli.train import train_config_path
from ropd.config import DEFAULT_CONFIG, load_config
from ropd.testing.scripted_server import ScriptedServer
from ropd.training.resume import RESUMABLE, changed_fields, resumable

pytestmark = pytest.mark.timeout(300)


def test_resume_refuses_a_changed_teacher_and_continues_the_saved_config_without_config(tmp_path, capsys):
    out = tmp_path / "run"
    with ScriptedServer(Scripted()) as server:
        values = settings(server, out, **{"training.max_steps": 1})
        assert main(["train", "--config", str(write_config(tmp_path / "run.yaml", values))]) == 0
        assert (out / "checkpoint-1").is_dir()
        capsys.readouterr()
        changed = write_config(tmp_path / "changed.yaml", {**values, "teacher.model": "other", "judge.chunk_size": 2})
        requests_before = len(server.requests)
        assert main(["train", "--config", str(changed), "--resume"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "teacher.model" in err and "judge.chunk_size" in err and str(out / "config.yaml") in err
        assert len(server.requests) == requests_before and server.model_lists == 1  # refused before any check or call
        assert load_config(out / "config.yaml").teacher.model == "scripted"  # the saved config is left as it was
        # no --config: the saved config goes on, with a field a resumed run may change (max_steps)
        assert main(["train", "--resume", "--output", str(out), "--max-steps", "2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"continuing the run's saved config {out / 'config.yaml'}" in err
    assert "resuming" in err and "from checkpoint-1 (step 1 of 2" in err
    assert (out / "checkpoint-2").is_dir() and (out / "final").is_dir()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_changed_fields_name_every_difference_and_the_whitelist_lets_operations_change():
    saved = load_config(overrides={"teacher.model": "gpt-4o"})
    new = load_config(
        overrides={"teacher.model": "gpt-4o-mini", "training.max_steps": 7, "training.report_to": ["tensorboard"], "data.max_prompts": 3}
    )
    changed = changed_fields(saved, new)
    assert changed == ["data.max_prompts", "teacher.model", "training.max_steps", "training.report_to"]
    assert [f for f in changed if f not in RESUMABLE] == ["data.max_prompts", "teacher.model"]
    priced = load_config(overrides={"teacher.model": "gpt-4o"}).model_copy(update={"prices": {**saved.prices}})
    priced.prices["gpt-4o"] = priced.prices["gpt-4o"].model_copy(update={"input": 9.0})
    assert changed_fields(saved, priced) == ["prices.gpt-4o.input"] and resumable("prices.gpt-4o.input")


def test_the_config_source_of_ropd_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/default is looked up where `ropd train` runs
    out = tmp_path / "run"
    assert train_config_path(None, {}) == DEFAULT_CONFIG  # `ropd train`, `make demo`
    assert train_config_path(None, {"output.resume": True}) == DEFAULT_CONFIG  # nothing saved in runs/default: the demo
    assert train_config_path(None, {"output.resume": True, "output.dir": str(out)}) is None  # nothing saved there
    assert train_config_path(None, {"teacher.model": "gpt-4o"}) is None  # the library defaults, then flags
    out.mkdir()
    (out / "config.yaml").write_text("teacher:\n  model: scripted\n")
    assert train_config_path(None, {"output.resume": True, "output.dir": str(out)}) == out / "config.yaml"
    assert train_config_path("given.yaml", {"output.resume": True, "output.dir": str(out)}).name == "given.yaml"


def test_a_finished_run_resumed_says_there_is_nothing_left(tmp_path, capsys):
    out = tmp_path / "run"
    with ScriptedServer(Scripted()) as server:
        config_file = write_config(tmp_path / "run.yaml", settings(server, out, **{"training.max_steps": 1}))
        assert main(["train", "--config", str(config_file)]) == 0
        capsys.readouterr()
        assert main(["train", "--config", str(config_file)]) == 1  # a second plain start would overwrite the run
        assert "pass --resume" in " ".join(capsys.readouterr().err.split())
        requests = len(server.requests)
        assert main(["train", "--config", str(config_file), "--resume"]) == 0
        assert len(server.requests) == requests  # nothing trained, nothing asked
    err = " ".join(capsys.readouterr().err.split())
    assert "step 1 of 1: nothing left to train" in err and f"final model in {out / 'final'}" in err
