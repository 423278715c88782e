"""The papers' evaluation suites, read offline from small files in each Hub release's own columns, scored by their rules,
and `ropd eval --suite ... --protocol published` end to end on one of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ropd.cli import main
from ropd.data import DataError
from ropd.evaluation.eval import Sample, score
from ropd.evaluation.suites import CHOICE_INSTRUCTION, MATH_INSTRUCTION, PUBLISHED_PROTOCOL, load_suite

# Two rows per release, in its columns (the AIME 2024 release also carries solution and url, which are not read).
RELEASES = {
    "aime24": [
        {"id": 60, "problem": "Find the remainder when 2024 is divided by 7.", "answer": "1", "solution": "...", "url": "..."},
        {"id": 61, "problem": "Compute 3/6 as a fraction.", "answer": "\\frac{1}{2}", "solution": "...", "url": "..."},
    ],
    "aime25": [{"id": "0", "problem": "What is 17 + 25?", "answer": "42"}, {"id": "1", "problem": "What is 2^10?", "answer": "1024"}],
    "hmmt25": [
        {"problem_idx": 1, "problem": "Compute 6!.", "answer": "720"},
        {"problem_idx": 2, "problem": "Compute sqrt(8).", "answer": "2\\sqrt{2}"},
    ],
    "gpqa-diamond": [
        {"Record ID": "rec1", "Question": "Which is a noble gas?", "Correct Answer": "Neon", "Incorrect Answer 1": "Sodium",
         "Incorrect Answer 2": "Iron", "Incorrect Answer 3": "Carbon"},
        {"Record ID": "rec2", "Question": "What is the charge of an electron?", "Correct Answer": "Negative",
         "Incorrect Answer 1": "Positive", "Incorrect Answer 2": "Neutral", "Incorrect Answer 3": "It varies"},
    ],
}  # fmt: skip


def write_release(tmp_path: Path, suite: str) -> Path:
    path = tmp_path / f"{suite}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in RELEASES[suite]))
    return path


def scored(rows, texts: list[str]):
    samples = [[Sample(text=text, num_tokens=5, truncated=False)] for text in texts]
    settings = {"n_samples": 1, "max_new_tokens": 5, "temperature": 1.0, "top_p": 0.95, "seed": 0}
    return score(rows, samples, k=1, model="m", backend="transformers", seconds=0.0, settings=settings)


@pytest.mark.parametrize("suite", ["aime24", "aime25", "hmmt25"])
def test_a_math_suite_asks_for_a_boxed_answer_and_checks_it_with_math_verify(tmp_path, suite):
    rows = load_suite(suite, str(write_release(tmp_path, suite)))
    assert [r.answer for r in rows] == [row["answer"] for row in RELEASES[suite]]
    assert all(r.question.endswith(MATH_INSTRUCTION) for r in rows)
    equal = {"1": "\\boxed{1}", "\\frac{1}{2}": "so \\boxed{0.5}", "42": "\\boxed{42}", "1024": "\\boxed{2^{10}}", "720": "\\boxed{720}",
             "2\\sqrt{2}": "\\boxed{\\sqrt{8}}"}  # fmt: skip
    assert [record.correct for record in scored(rows, [equal[r.answer] for r in rows]).records] == [1, 1]
    assert [record.correct for record in scored(rows, ["\\boxed{3}", "\\boxed{7}"]).records] == [0, 0]


def test_gpqa_shuffles_the_options_per_question_and_checks_the_letter(tmp_path):
    source = str(write_release(tmp_path, "gpqa-diamond"))
    rows = load_suite("gpqa-diamond", source)
    assert [r.id for r in rows] == ["rec1", "rec2"] and rows == load_suite("gpqa-diamond", source)  # the same order each time
    assert [r.answer for r in rows] == ["C", "A"]  # the correct option is not always first
    for row, raw in zip(rows, RELEASES["gpqa-diamond"], strict=True):
        assert f"{row.answer}) {raw['Correct Answer']}" in row.question and row.question.endswith(CHOICE_INSTRUCTION)
    right = [f"Neon is inert.\nAnswer: {rows[0].answer}", f"Answer: {rows[1].answer}"]
    wrong = [f"Answer: {'B' if r.answer == 'A' else 'A'}" for r in rows]
    assert [r.correct for r in scored(rows, right).records] == [1, 1]
    assert [r.correct for r in scored(rows, wrong).records] == [0, 0]


def test_suites_without_a_loader_and_bad_files_say_so(tmp_path):
    with pytest.raises(DataError, match=r"IFEval's instruction checks.*NLTK"):
        load_suite("ifeval")
    with pytest.raises(DataError, match="unknown suite 'mmlu'"):
        load_suite("mmlu")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    with pytest.raises(DataError, match=r"suite 'aime24' \(.*bad.jsonl\), row 1: field 'problem' is missing"):
        load_suite("aime24", str(bad))


@pytest.mark.slow
def test_ropd_eval_runs_a_suite_with_the_published_protocol(tmp_path):
    out = tmp_path / "result.json"
    source = write_release(tmp_path, "aime25")
    argv = ["eval", "--suite", "aime25", "--dataset", str(source), "--model", "tiny-random", "--protocol", "published"]
    assert main([*argv, "-n", "2", "--max-new-tokens", "4", "--backend", "transformers", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["dataset"], result["num_prompts"], result["n_samples"]) == ("aime25", 2, 2)  # -n overrides the preset's 16
    assert (result["temperature"], result["top_p"]) == (PUBLISHED_PROTOCOL["temperature"], PUBLISHED_PROTOCOL["top_p"])
    assert [r["reference"] for r in result["records"]] == ["42", "1024"] and all(r["samples"] == 2 for r in result["records"])
    assert main(["eval", "--model", "tiny-random"]) == 2  # neither a suite nor a dataset
