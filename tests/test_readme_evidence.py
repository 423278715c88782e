"""experiments/check_readme_evidence.py: every figure in the README and the docs pages names the committed file it comes from."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "experiments" / "check_readme_evidence.py"


def load_checker():
    """The checker script as a module (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location("check_readme_evidence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


checker = load_checker()


def problems(markdown: str, tmp_path: Path) -> list[str]:
    (tmp_path / "experiments" / "results").mkdir(parents=True, exist_ok=True)
    (tmp_path / "experiments" / "results" / "run.json").write_text("{}")
    return checker.problems(markdown, tmp_path)


def test_what_counts_as_a_figure():
    assert checker.figures("it took 2.1 min and 27.3 s, 22.5% of 4.4 GB at 40 tok/s, 2.6x faster") == [
        "2.1 min",
        "27.3 s",
        "22.5%",
        "4.4 GB",
        "40 tok/s",
        "2.6x",
    ]
    assert checker.figures("16 of 46 faulted, 0/12 raised, AUC 0.82") == ["16 of 46", "0/12", "0.82"]
    not_figures = "Python ≥ 3.11, llama-cpp-python 0.3.36, the 1.5B judge, 2026-12-02, 4 rollouts, `lr 2e-4 took 5 s`, [a](#x-1.5)"
    not_figures += ", a limit (`--timeout`, 10 s), `chunk_size` 4"
    assert checker.figures(not_figures) == []


def test_an_uncited_figure_is_reported_and_a_cited_one_is_not(tmp_path):
    found = problems("# Title\n\nThe step took 3.2 s.\n\nThe run took 4.1 s (`experiments/results/run.json`).\n", tmp_path)
    assert len(found) == 1 and "README.md:3:" in found[0] and "3.2 s" in found[0]


def test_a_missing_evidence_file_cites_nothing_and_is_reported(tmp_path):
    found = problems("The run took 4.1 s (`experiments/results/gone.json`).\n", tmp_path)
    assert any("does not exist" in m for m in found) and any("4.1 s" in m for m in found)


def test_tables_headings_and_the_paragraph_before_carry_the_citation(tmp_path):
    markdown = "\n".join(
        [
            "## Speed (`experiments/results/run.json`)",
            "",
            "Step time 3.2 s.",
            "",
            "## Other",
            "",
            "Measured (`experiments/results/run.json`):",
            "",
            "| run | time |",
            "|---|---|",
            "| a | 1.5 s |",
            "",
            "It means 0.5 s per call.",  # read from the table above: its caption's citation covers it
            "",
            "## Third",
            "",
            "| run | time |",  # the paragraph before it stands under another heading: no caption
            "|---|---|",
            "| a | 1.5 s (`experiments/results/run.json`) |",
            "| b | 2.5 s |",
            "",
            "```bash",
            "echo 9.9 s /tmp/x",
            "```",
        ]
    )
    found = problems(markdown, tmp_path)
    assert len(found) == 1 and "README.md:20:" in found[0] and "2.5 s" in found[0]  # a row does not borrow another row's citation


def test_text_pointing_outside_the_project_is_reported(tmp_path):
    found = problems("Results are in `/tmp/je/run.json`.\n", tmp_path)
    assert len(found) == 1 and "outside the project" in found[0]


def test_the_readme_names_evidence_for_every_figure():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout


def test_the_docs_pages_are_checked_too_and_named_in_messages(tmp_path):
    found = checker.problems("# Speed\n\nThe step took 3.2 s.\n", tmp_path, "docs/performance.md")
    assert len(found) == 1 and found[0].startswith("docs/performance.md:3:")
    checked = checker.pages()
    assert checked[0].name == "README.md" and set(checked[1:]) == set((REPO / "docs").glob("*.md"))
