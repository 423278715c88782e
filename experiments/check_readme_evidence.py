"""Check that every figure in README.md and the docs pages (docs/*.md) names the committed file it comes from.

A *figure* is a measured number: a number with a unit of time, size, rate or ratio (`2.1 min`, `27.3 s`,
`35 ms`, `4.4 GB`, `40 tok/s`, `22.5%`, `2.6x`), a count out of a total (`16 of 46`, `0/12`), or a decimal
number (`0.82`). Versions (`0.3.36`, `Python ≥ 3.11`), dates, model sizes (`1.5B`), identifiers, a setting's value
right after its flag or key (`--tools-python-timeout`, 10 s) and anything inside inline code or a link target are not
figures. Code blocks and headings are not checked.

The README is read as units: a paragraph, a list item, or a table row. A unit holding a figure is *cited*
when an existing path under `experiments/results/` is named

  - in the unit itself;
  - for a table row: in the table's header row, in the paragraph just before the table (its caption) or
    in the one just after it, under the same heading (other rows do not count: each row names its own
    evidence or shares the table's);
  - for a paragraph or list item: in the paragraph or list item just before it, under the same heading
    (a figure read from the evidence the text just named), or, right after a table, where the table's
    rows may name it;
  - in a heading of a section that encloses it (e.g. `### CPU result (`experiments/results/bench-cpu/`)`).

A path that does not exist does not cite anything and is reported. Text outside code blocks must not point
at files outside the project (`/tmp/...`, `/home/...`, `/root/...`, `/work/...`). Every unit that breaks a
rule is printed with its line number; the exit code is 1 when there is one, else 0.

The same rules hold for every page in docs/ (the write-ups of the measurements live there); the generated
references in docs/reference/ hold no measurements and are not read.

    .venv/bin/python experiments/check_readme_evidence.py [FILE.md ...]   # default: README.md and docs/*.md
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVIDENCE = re.compile(r"experiments/results/[\w./-]*[\w/]")
UNIT = r"(?:%|x\b|s\b|ms\b|min\b|minutes\b|GB\b|GiB\b|MB\b|kB\b|tok/s|tokens/s)"
FIGURE = re.compile(
    rf"(?<![\w.-])\d[\d,]*(?:\.\d+)?\s?{UNIT}"  # a number with a unit: 2.1 min, 22.5%, 2.6x, 4.4 GB
    r"|(?<![\w./-])\d+ of \d[\d,]*(?![\w.])"  # a count out of a total: 16 of 46
    r"|(?<![\w./-])\d+/\d+(?![\w./])"  # the same as a fraction: 0/12
    r"|(?<![\w.-])\d+\.\d+(?![\w.])"  # a decimal: 0.82 (not 0.3.36, 1.5B, 2026-12-02)
)
INLINE_CODE = re.compile(r"`[^`]*`")
SETTING = re.compile(r"`[^`\s]+`,?\s*\d[\d,.]*\s?(?:%|x|s|ms|min|GB|GiB|MB|kB)?(?![\w.])")  # `--flag`, 10 s
VERSION = re.compile(r"(?:[≥≤]|[<>=~]=|Python)\s?\d+(?:\.\d+)+")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
OUTSIDE = re.compile(r"(?<![\w.~])/(?:tmp|home|root|work|mnt)/\S*")


@dataclass
class Unit:
    """A paragraph, list item or table row: where it starts, its text, and the headings above it."""

    line: int
    text: str
    kind: str  # "paragraph", "item" or "row"
    headings: list[str] = field(default_factory=list)
    table: int | None = None  # the index of its table, for rows


def parse(markdown: str) -> tuple[list[Unit], dict[int, list[Unit]]]:
    """The README's units in order, and each table's rows; code blocks are skipped, headings kept as context."""
    units: list[Unit] = []
    tables: dict[int, list[Unit]] = {}
    headings: list[tuple[int, str]] = []
    in_code, current, table_index = False, None, -1
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code, current = not in_code, None
            continue
        if in_code:
            continue
        if not stripped:
            current = None
            continue
        if heading := re.match(r"(#+)\s+(.*)", stripped):
            level = len(heading.group(1))
            headings = [h for h in headings if h[0] < level] + [(level, heading.group(2))]
            current = None
            continue
        context = [text for _, text in headings]
        if stripped.startswith("|"):
            if current is None or current.kind != "row":
                table_index += 1
                tables[table_index] = []
            current = Unit(number, stripped, "row", context, table_index)
            tables[table_index].append(current)
            units.append(current)
        elif re.match(r"([-*]|\d+\.)\s", stripped):
            current = Unit(number, stripped, "item", context)
            units.append(current)
        elif current is not None and current.kind != "row":
            current.text += " " + stripped
        else:
            current = Unit(number, stripped, "paragraph", context)
            units.append(current)
    return units, tables


def figures(text: str) -> list[str]:
    """The figures of a text, leaving out inline code and link targets."""
    text = VERSION.sub("", LINK_TARGET.sub("]", INLINE_CODE.sub("", SETTING.sub("", text))))
    return [m.group(0) for m in FIGURE.finditer(text)]


def evidence(text: str, root: Path) -> tuple[list[str], list[str]]:
    """The results paths a text names: those that exist, and those that do not."""
    found, missing = [], []
    for path in EVIDENCE.findall(text):
        (found if (root / path).exists() else missing).append(path)
    return found, missing


def is_header_or_rule(unit: Unit, rows: list[Unit]) -> bool:
    """A table's header row or its |---| separator: column names, not figures."""
    return unit is rows[0] or set(unit.text) <= set("|-: ")


def context(units: list[Unit], index: int, tables: dict[int, list[Unit]]) -> list[str]:
    """The texts besides its own and its headings whose evidence covers a unit (see the module docstring)."""
    unit = units[index]
    if unit.table is not None:
        rows = tables[unit.table]
        first, last = units.index(rows[0]), units.index(rows[-1])
        around = [units[i] for i in (first - 1, last + 1) if 0 <= i < len(units)]
        return [rows[0].text] + [u.text for u in around if u.kind != "row" and u.headings == unit.headings]
    before = units[index - 1] if index else None
    if before is None or before.headings != unit.headings:
        return []
    if before.table is not None:  # the paragraph after a table reads it: the table's own citation covers it
        return context(units, units.index(tables[before.table][0]), tables)
    return [before.text]


def problems(markdown: str, root: Path = REPO, name: str = "README.md") -> list[str]:
    """One message per unit whose figures name no existing evidence, names a missing file, or points outside the project;
    each message starts with `name:line`."""
    units, tables = parse(markdown)
    messages = []
    for index, unit in enumerate(units):
        rows = tables[unit.table] if unit.table is not None else []
        cited = evidence(" ".join([unit.text, *unit.headings, *context(units, index, tables)]), root)[0]
        own_missing = evidence(unit.text, root)[1]
        shown = unit.text if len(unit.text) <= 160 else unit.text[:157] + "..."
        if own_missing:
            messages.append(f"{name}:{unit.line}: names {', '.join(own_missing)}, which does not exist: {shown}")
        if outside := OUTSIDE.findall(INLINE_CODE.sub(lambda m: m.group(0).strip("`"), unit.text)):
            messages.append(f"{name}:{unit.line}: points outside the project ({', '.join(outside)}): {shown}")
        if rows and is_header_or_rule(unit, rows):
            continue
        found = figures(unit.text)
        if found and not cited:
            where = "the table's header, caption or next paragraph, " if rows else "the paragraph before, "
            messages.append(
                f"{name}:{unit.line}: figures {', '.join(found[:6])} with no evidence in the text, {where}its headings: {shown}"
            )
    return messages


def pages(root: Path = REPO) -> list[Path]:
    """The files checked by default: the README and every page directly in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def project_root(path: Path) -> Path:
    """The folder whose experiments/results/ a file's citations are read from: the nearest one above it holding experiments/."""
    for folder in path.resolve().parents:
        if (folder / "experiments").is_dir():
            return folder
    return path.resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = [Path(a) for a in args] if args else pages()
    total = 0
    for path in files:
        root = project_root(path)
        name = path.resolve().relative_to(root).as_posix() if path.resolve().is_relative_to(root) else str(path)
        found = problems(path.read_text(encoding="utf-8"), root, name)
        for message in found:
            print(message)
        total += len(found)
    shown = ", ".join(str(f) for f in files) if len(files) <= 3 else f"{len(files)} files (README.md and docs/*.md)"
    print(f"{total} problem(s) in {shown}" if total else f"every figure in {shown} names its evidence")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
