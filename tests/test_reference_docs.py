"""docs/reference/: the config and CLI references match what scripts/gen_reference.py generates from the code."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gen_reference.py"


def load_generator():
    """The generator script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


generator = load_generator()


def check_page(page: Path, generated: str) -> None:
    assert page.exists(), f"{page.relative_to(REPO)} is missing: generate it with `{generator.COMMAND}`"
    assert page.read_text(encoding="utf-8") == generated, (
        f"{page.relative_to(REPO)} is stale (the code changed since it was generated): regenerate it with `{generator.COMMAND}`"
    )


def test_config_reference_is_current():
    check_page(generator.CONFIG_PAGE, generator.config_reference())


def test_cli_reference_is_current():
    committed = generator.CLI_PAGE.read_text(encoding="utf-8") if generator.CLI_PAGE.exists() else ""
    made_with = re.search(r"with (Python \d+\.\d+)", committed)
    if made_with and made_with.group(1) != generator.python_version():
        pytest.skip(f"{generator.CLI_PAGE.name} was generated with {made_with.group(1)}, whose argparse lays out help differently")
    check_page(generator.CLI_PAGE, generator.cli_reference())


def test_config_reference_lists_every_field():
    from ropd import RunConfig

    page = generator.config_reference()
    for path, model in generator.config_sections(RunConfig):
        for name, info in model.model_fields.items():
            assert f"- **`{name}`**" in page, f"{path}{name} is missing from the config reference"
            if info.description:
                assert " ".join(info.description.split()) in page


def test_cli_reference_lists_every_subcommand_and_option():
    from ropd.cli import build_parser

    page = generator.cli_reference()
    for name, sub in generator.subcommands(build_parser()):
        assert f"## `ropd {name}`" in page
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # an old spelling kept for one release, hidden from --help
                continue
            for flag in action.option_strings:
                assert flag in page, f"ropd {name} {flag} is missing from the CLI reference"


def test_the_reference_does_not_depend_on_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    assert generator.cli_reference() == generator.CLI_PAGE.read_text(encoding="utf-8")


def test_a_stale_page_is_named_with_the_command_that_regenerates_it(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(generator, "PAGES", {stale: generator.config_reference})
    monkeypatch.setattr(generator, "REPO", tmp_path)
    assert generator.main(["--check"]) == 1
    assert f"config.md is stale: regenerate it with `{generator.COMMAND}`" in capsys.readouterr().out
