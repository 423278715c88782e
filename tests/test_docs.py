"""The README stays short, and every page in docs/ is reachable from the docs site's navigation (mkdocs.yml)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150


def nav_pages(nav: list) -> list[str]:
    """Every page path the mkdocs navigation names, nested sections included."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_the_readme_is_at_most_150_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/ (limit {README_MAX_LINES})"


def test_every_docs_page_is_in_the_navigation_and_every_nav_entry_exists():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    missing = sorted(p for p in listed if not (REPO / "docs" / p).is_file())
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    unlisted = sorted(set(pages) - set(listed))
    assert not unlisted, f"pages in docs/ missing from mkdocs.yml's nav: {unlisted}"


def test_the_readme_links_only_to_files_that_exist():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    broken = sorted({t for t in targets if t and not (REPO / t).exists()})
    assert not broken, f"README.md links to missing files: {broken}"
