"""One command-line vocabulary: a flag means the same thing in every `ropd` subcommand, and the old spellings still
work for one release, each with a warning on stderr naming its new flag."""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest

from ropd.cli import build_parser
from ropd.flags import DeprecatedSpelling

# Config keys whose flag means what a command's own flag of that name means: the folder a command writes, the result
# cache, the integer seed, the prompts, the teacher, the student's sampling.
SAME_MEANING = {
    "output.dir": "output",
    "output_dir": "output",
    "output.cache": "cache",
    "training.seed": "seed",
    "data.dataset": "dataset",
    "teacher.model": "teacher",
    "training.temperature": "temperature",
    "training.top_p": "top_p",
}

# old spelling -> (a command line that uses it, the new flag, the parsed value it must give)
DEPRECATED = {
    "teach -k": (["teach", "-k", "3"], "--num-teacher-answers", ("teacher.num_answers", "3")),
    "eval --json": (["eval", "--model", "m", "--json", "r.json"], "--output", ("output", "r.json")),
    "judge-eval -n": (["judge-eval", "-n", "5"], "--items", ("items", 5)),
    "judge-eval --json": (["judge-eval", "--json", "r.json"], "--output", ("output", "r.json")),
    "inspect --out": (["inspect", "run", "--out", "r"], "--output", ("output", "r")),
    "bench --output-dir": (["bench", "--config", "b.yaml", "--output-dir", "d"], "--output", ("output", "d")),
    "train --output-dir": (["train", "--output-dir", "d"], "--output", ("output.dir", "d")),
    "train --output-cache": (["train", "--output-cache", "c.sqlite"], "--cache", ("output.cache", "c.sqlite")),
    "teach --output-dir": (["teach", "--output-dir", "d"], "--output", ("output.dir", "d")),
    "teach --output-cache": (["teach", "--output-cache", "c.sqlite"], "--cache", ("output.cache", "c.sqlite")),
    "judge --seed": (["judge", "--input", "i.json", "--seed", "gsm-3:12"], "--group", ("group", "gsm-3:12")),
    "judge --judge-base-url": (
        ["judge", "--input", "i.json", "--judge-base-url", "http://h/v1"],
        "--base-url",
        ("base_url", "http://h/v1"),
    ),
    "judge --judge": (["judge", "--input", "i.json", "--judge", "m"], "--model", ("model", "m")),
    "rubric --judge": (["rubric", "--input", "i.json", "--judge", "m"], "--model", ("model", "m")),
    "rubric --judge-base-url": (
        ["rubric", "--input", "i.json", "--judge-base-url", "http://h/v1"],
        "--base-url",
        ("base_url", "http://h/v1"),
    ),
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def meaning(action: argparse.Action) -> str:
    return SAME_MEANING.get(action.dest, action.dest)


def test_every_flag_means_one_thing_in_every_subcommand():
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for command, parser in subcommands().items():
        for action in parser._actions:
            if isinstance(action, (DeprecatedSpelling, argparse._HelpAction)):
                continue
            for option in action.option_strings:
                seen[option].add((meaning(action), command))
    clashes = {option: sorted(uses) for option, uses in seen.items() if len({dest for dest, _ in uses}) > 1}
    assert clashes == {}


def test_no_single_letter_flag_has_two_meanings_even_among_old_spellings():
    seen: dict[str, set[str]] = defaultdict(set)
    for parser in subcommands().values():
        for action in parser._actions:
            for option in action.option_strings:
                if len(option) == 2 and option != "-h" and not isinstance(action, DeprecatedSpelling):
                    seen[option].add(meaning(action))
    assert {option: dests for option, dests in seen.items() if len(dests) > 1} == {}
    assert seen["-k"] == {"k"} and seen["-n"] == {"samples"}  # pass@k and samples per prompt, in `ropd eval`


def test_every_old_spelling_is_listed_here():
    old = {
        f"{command} {action.option_strings[0]}"
        for command, parser in subcommands().items()
        for action in parser._actions
        if isinstance(action, DeprecatedSpelling)
    }
    assert old == set(DEPRECATED)


@pytest.mark.parametrize("name", sorted(DEPRECATED))
def test_an_old_spelling_still_works_and_warns_naming_the_new_flag(name, capsys):
    argv, new, (dest, value) = DEPRECATED[name]
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    old = name.split()[1]
    assert f"warning: {old} is deprecated" in capsys.readouterr().err
    new_argv = [new if part == old else part for part in argv]
    assert getattr(build_parser().parse_args(new_argv), dest) == value
    assert "deprecated" not in capsys.readouterr().err


def test_old_spellings_are_hidden_from_help():
    for name, (argv, _, _) in DEPRECATED.items():
        text = subcommands()[argv[0]].format_help()
        assert f" {name.split()[1]} " not in text.replace(",", " ").replace("\n", " "), name
