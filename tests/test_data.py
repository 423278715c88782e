"""Prompt loaders: files of every format, reasoning-gym specs, and bad rows named by file, row and field."""

import json

import pytest

from ropd.data import DataError, load_prompts, prompt_id, to_dataset
from ropd.reward.answers import outcome_reward


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_with_messages_and_strings(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": [{"role": "user", "content": "2+2?"}], "answer": 4},
            {"prompt": "3+3?"},
        ],
    )
    rows = load_prompts(str(path))
    assert rows[0].id == "a" and rows[0].answer == "4" and rows[0].question == "2+2?"
    assert rows[1].prompt[0].role == "user" and rows[1].answer is None
    assert rows[1].id == prompt_id([{"role": "user", "content": "3+3?"}])  # stable across loads
    assert load_prompts(str(path))[1].id == rows[1].id


def test_json_parquet_and_csv(tmp_path):
    rows = [{"id": "x", "prompt": "hello?", "answer": "1"}, {"id": "y", "prompt": "bye?", "answer": "2"}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    to_csv = tmp_path / "p.csv"
    to_csv.write_text("id,prompt,answer\nx,hello?,1\ny,bye?,2\n")
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    for name in ("p.json", "p.csv", "p.parquet"):
        loaded = load_prompts(str(tmp_path / name))
        assert [r.id for r in loaded] == ["x", "y"] and loaded[1].question == "bye?" and loaded[0].answer == "1"


def test_to_dataset_is_trl_conversational(tmp_path):
    rows = load_prompts(
        str(write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "q?"}, {"id": "b", "prompt": "r?", "metadata": {"k": 1}}]))
    )
    ds = to_dataset(rows)
    assert ds[0]["prompt"] == [{"role": "user", "content": "q?"}] and ds[0]["id"] == "a"
    assert (ds[0]["task"], ds[0]["metadata"]) == ("", "") and json.loads(ds[1]["metadata"]) == {"k": 1}


def test_the_outcome_reward_checks_a_reasoning_gym_row_with_the_tasks_own_scorer():
    row = to_dataset(load_prompts("reasoning-gym:chain_sum?size=1&seed=0&min_terms=2&max_terms=3&min_digits=1&max_digits=2"))[0]
    expression = row["prompt"][0]["content"].rsplit(":", 1)[1].strip(" =")  # e.g. "15 - 43 - 75"
    completions = [f"The answer is {expression}", f"The answer is {row['answer']}"]
    columns = {name: [row[name]] * 2 for name in ("answer", "task", "metadata")}
    assert row["task"] == "chain_sum"
    assert outcome_reward([None, None], completions, **columns) == [0.0, 1.0]  # restating the sum is not answering it


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"answer": "1"}, "prompt"),
        ({"prompt": [{"role": "wizard", "content": "hi"}]}, "prompt.0.role"),
        ({"prompt": [{"role": "user"}]}, "prompt.0.content"),
        ({"prompt": 17}, "prompt"),
        ({"prompt": [{"role": "user", "content": "   "}]}, "prompt"),
        ({"prompt": []}, "prompt"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, row])
    with pytest.raises(DataError) as info:
        load_prompts(str(path))
    message = str(info.value)
    assert str(path) in message and "row 2" in message and f"'{field}'" in message


def test_broken_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"broken.jsonl, row 2 \(line 2\): not valid JSON"):
        load_prompts(str(path))


def test_duplicate_ids_are_rejected(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    with pytest.raises(DataError, match="row 2: field 'id': 'a' repeats row 1"):
        load_prompts(str(path))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        load_prompts(str(tmp_path / "p.txt"))


def test_reasoning_gym_is_seeded_and_has_answers():
    a = load_prompts("reasoning-gym:gsm_symbolic?size=5&seed=3")
    b = load_prompts("reasoning-gym:gsm_symbolic?size=5&seed=3")
    c = load_prompts("reasoning-gym:gsm_symbolic?size=5&seed=4")
    assert [r.question for r in a] == [r.question for r in b] != [r.question for r in c]
    assert len(a) == 5 and all(r.answer for r in a) and a[0].id == "gsm_symbolic-s3-0"
    assert a[0].model_extra["task"] == "gsm_symbolic"


def test_reasoning_gym_unknown_task():
    with pytest.raises(DataError, match="no_such_task"):
        load_prompts("reasoning-gym:no_such_task?size=2")


def test_max_prompts_and_system_prompt():
    rows = load_prompts("reasoning-gym:gsm_symbolic?size=5&seed=0", max_prompts=2, system_prompt="Be brief.")
    assert len(rows) == 2 and rows[0].prompt[0].role == "system" and rows[0].prompt[0].content == "Be brief."


def test_hub_dataset_offline_error():
    with pytest.raises(DataError, match="Offline, pass a local file"):
        load_prompts("someone/surely-not-cached-dataset")


def test_a_verl_row_gives_its_ground_truth_as_the_answer(tmp_path):
    # verl's row format, as DAPO-Math-17k ships it: the reference answer sits in reward_model.ground_truth.
    row = {"prompt": [{"role": "user", "content": "6*7?"}], "reward_model": {"ground_truth": "42", "style": "rule"}}
    path = write_jsonl(tmp_path / "verl.jsonl", [row, {**row, "id": "b", "answer": "41"}])
    assert [r.answer for r in load_prompts(str(path))] == ["42", "41"]  # an explicit answer column wins
