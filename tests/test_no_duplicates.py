"""One path for each job: no block of six or more lines stands in two modules of `ropd/`.

Lines are compared with white space folded; blank lines, comments, imports and lines of brackets alone are
passed over. Blocks alike only in shape (keyword arguments passed on, fields of two models) are not counted:
the same code with other names is not the same job written twice.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ropd"
BLOCK = 6


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text with white space folded) of the lines that count."""
    kept = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith(("#", "import ", "from ")) or set(text) <= set("()[]{},:"):
            continue
        kept.append((number, re.sub(r"\s+", " ", text)))
    return kept


def shared_blocks(root: Path, size: int = BLOCK) -> list[list[tuple[str, int]]]:
    """Every run of `size` counted lines that stands in more than one .py file under `root`: the (file, first line) places of each."""
    places: dict[tuple[str, ...], set[tuple[str, int]]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        lines = code_lines(path)
        for start in range(len(lines) - size + 1):
            window = tuple(text for _, text in lines[start : start + size])
            places[window].add((str(path.relative_to(root)), lines[start][0]))
    return [sorted(found) for found in places.values() if len({name for name, _ in found}) > 1]


def test_the_check_finds_a_block_written_twice(tmp_path):
    block = "\n".join(f"value_{i} = compute({i})" for i in range(6))
    (tmp_path / "a.py").write_text(f"import os\n\n{block}\n")
    (tmp_path / "b.py").write_text(f"# elsewhere\n{block}\nother = 1\n")
    (tmp_path / "c.py").write_text(block.replace("compute", "measure"))
    assert [[name for name, _ in places] for places in shared_blocks(tmp_path)] == [["a.py", "b.py"]]


def test_no_block_of_six_lines_is_repeated_between_ropd_modules():
    repeated = shared_blocks(PACKAGE)
    assert repeated == [], "\n".join(", ".join(f"{name}:{line}" for name, line in places) for places in repeated)
