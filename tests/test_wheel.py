"""The built wheel works on its own: `python -m build`, a clean venv, `pip install` of the wheel, then `ropd` run
from a folder that is not the checkout finds its templates, model table and shipped configs inside the package.

The clean venv has no pip and no packages of its own; a .pth file makes the project's dependencies (torch, TRL, ...)
importable from the test's environment, so nothing is downloaded. ropd itself must come from the wheel: the
checkout's editable install is not visible there (its finder is only loaded from a site directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from scripted_pipeline import Scripted

from ropd.testing.scripted_server import ScriptedServer

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


def package_data(root: Path) -> set[str]:
    """Every file of the package in the source tree but Python sources and caches, as a wheel would name it."""
    files = {p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")}
    return {p.relative_to(root.parent).as_posix() for p in files}


def build_wheel(tmp_path: Path) -> Path:
    """`python -m build` (sdist, then the wheel from the sdist) on a copy of the project, so the checkout is untouched."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "ropd", source / "ropd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)], cwd=tmp_path)
    (wheel,) = dist.glob("ropd-*.whl")
    assert len(list(dist.glob("ropd-*.tar.gz"))) == 1
    return wheel


def clean_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new venv with only the wheel installed in it, and the test environment's packages behind it on sys.path."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).strip()
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_ropd_test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    # --ignore-installed: the test environment's editable ropd is visible through the .pth; never touch it
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed"]
    run([*pip, "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    return venv


def test_the_model_card_names_the_model_the_student_came_from(tmp_path):
    from ropd.endpoints.models import base_model_name

    assert base_model_name("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # packaged: its upstream Hub id
    assert base_model_name("qwen") == "Qwen/Qwen3-0.6B"
    assert base_model_name("org/some-model") == "org/some-model"
    assert base_model_name(str(tmp_path)) == str(tmp_path)  # a local folder: named as given


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_folder(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"ropd/__init__.py", "ropd/templates/rubricator.jinja", "ropd/configs/models.yaml", "ropd/configs/default.yaml"} <= names
    missing = package_data(REPO / "ropd") - names
    assert not missing, f"package files left out of the wheel: {sorted(missing)}"

    venv = clean_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    python, ropd = str(venv / "bin" / "python"), str(venv / "bin" / "ropd")

    where = run(
        [python, "-c", "import ropd, ropd.reward.prompts; print(ropd.__file__); print(ropd.reward.prompts.PROMPTS_DIR)"], elsewhere, env
    )
    assert str(venv) in where and str(REPO) not in where, where
    show_default = "from ropd.config import DEFAULT_CONFIG, load_config; print(load_config(DEFAULT_CONFIG).student.model)"
    loaded = run([python, "-c", show_default], elsewhere, env)
    assert "smollm2-135m" in loaded

    models = run([ropd, "models"], elsewhere, env)
    assert "tiny-random" in models and "qwen2.5-coder-1.5b" in models
    assert "--rubric-template" in run([ropd, "train", "--help"], elsewhere, env)

    # A tiny offline run: the random student, a scripted teacher, rubricator and judge on loopback (templates rendered).
    scripted = Scripted()
    with ScriptedServer(scripted) as server:
        flags = {
            "--student": "tiny-random",
            "--teacher": "scripted",
            "--teacher-base-url": server.base_url,
            "--num-teacher-answers": "1",
            "--dataset": "reasoning-gym:gsm_symbolic?size=2&seed=0",
            "--max-steps": "1",
            "--prompts-per-step": "1",
            "--num-generations": "2",
            "--max-completion-length": "8",
            "--save-steps": "5",
            "--output": "run",
        }
        run([ropd, "train", *[part for pair in flags.items() for part in pair]], elsewhere, env, timeout=400)
    assert len(scripted.answered["rubric"]) == 1 and len(scripted.answered["judge"]) == 1
    final = elsewhere / "run" / "final"
    assert (final / "config.json").is_file() and (elsewhere / "run" / "metrics.jsonl").is_file()
    card = (final / "README.md").read_text()
    assert "fine-tuned version of [tiny-random]" in card and "None" not in card.split("## Quick start")[0]
