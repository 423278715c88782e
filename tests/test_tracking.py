"""`--report-to tensorboard`: each step's rubric groups, sampled to training.log_groups, reach the tracker as a table
(a markdown table in tensorboard's text tab: it has no tables), written offline to the run's event files and read back.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from scripted_pipeline import CRITERIA, Scripted, settings
from tensorboardX.proto.event_pb2 import Event

from ropd.config import load_config
from ropd.data import load_prompts
from ropd.training.run import train
from ropd.training.tracking import COLUMNS, TABLE_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def event_records(path: Path):
    """The records of a TFRecord event file: length (8 bytes), its CRC (4), the data, its CRC (4)."""
    data, offset = path.read_bytes(), 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        yield data[offset + 12 : offset + 12 + length]
        offset += 16 + length


def logged_tables(run_dir: Path) -> dict[int, str]:
    """step -> the text logged under the groups table's tag."""
    tables = {}
    for path in run_dir.rglob("events.out.tfevents*"):
        for record in event_records(path):
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.tag.startswith(TABLE_KEY):
                    tables[event.step] = value.tensor.string_val[0].decode()
    return tables


def test_report_to_tensorboard_logs_a_sample_of_each_steps_rubric_groups(tmp_path):
    from ropd.testing.scripted_server import ScriptedServer

    out = tmp_path / "run"
    with ScriptedServer(Scripted()) as server:
        values = settings(server, out, **{"training.report_to": ["tensorboard"], "training.log_groups": 1})
        config = load_config(overrides=values)
        train(config)
    tables = logged_tables(out)
    assert sorted(tables) == [1, 2]  # one table per step
    questions = {p.id: p.question for p in load_prompts(config.data.dataset)}
    for step, table in tables.items():
        header, rule, *rows = table.splitlines()
        assert rule.startswith("|---|")
        assert header == "| " + " | ".join(COLUMNS) + " |"
        assert len(rows) == 1  # 2 groups per step, sampled to 1
        cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
        assert cells[0] == str(step) and cells[1] in questions
        assert cells[2] == questions[cells[1]].replace("\n", "<br>")[: len(cells[2])]
        assert f"[{CRITERIA[0][1]}] {CRITERIA[0][0]}" in cells[3]
        assert len(cells[4].split(", ")) == 3  # a reward per rollout
        assert set(cells[5].split(", ")) <= {"yes", "no"} and len(cells[5].split(", ")) == 3  # the rows have reference answers


def test_report_to_wandb_offline_logs_the_groups_as_a_table(tmp_path, monkeypatch):
    """wandb in offline mode (no account, no network): each step's sampled groups are a wandb Table, written to the
    offline run's media folder and read back."""
    from ropd.testing.scripted_server import ScriptedServer

    pytest.importorskip("wandb", reason="wandb is in the dev extra (make install)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    with ScriptedServer(Scripted()) as server:
        values = settings(server, out, **{"training.report_to": ["wandb"], "training.log_groups": 1})
        train(load_config(overrides=values))
    tables = [json.loads(p.read_text()) for p in sorted((tmp_path / "wandb-dir").rglob(f"{TABLE_KEY}_*.table.json"))]
    assert len(tables) == 2  # one table per step
    assert sorted(table["data"][0][0] for table in tables) == [1, 2]
    for table in tables:
        assert table["columns"] == list(COLUMNS)
        assert len(table["data"]) == 1  # 2 groups per step, sampled to 1
        row = dict(zip(COLUMNS, table["data"][0], strict=True))
        assert f"[{CRITERIA[0][1]}] {CRITERIA[0][0]}" in row["rubric"] and len(row["rewards"].split(", ")) == 3
