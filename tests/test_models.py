"""Model aliases and offline loading of the packaged models."""

import subprocess
import sys

import pytest

from ropd.config import ModelAlias
from ropd.endpoints.models import ModelError, is_local, load_model, load_tokenizer, local_path, resolve_model


def test_aliases_resolve():
    assert resolve_model("gpt-4o").kind == "api"
    assert resolve_model("qwen").target == "Qwen/Qwen3-0.6B"
    assert resolve_model("smollm2-135m").kind == "packaged"
    assert resolve_model("someorg/some-model").kind == "hub"
    assert resolve_model("o9-preview").kind == "api"
    assert not is_local("gpt-4o") and is_local("tiny-random")


def test_local_path_and_config_override(tmp_path):
    assert resolve_model(str(tmp_path)).target == str(tmp_path)
    extra = {"gpt-4o": ModelAlias(kind="api", target="gpt-4o-2024-08-06", base_url="http://127.0.0.1:1/v1")}
    assert resolve_model("gpt-4o", extra).target == "gpt-4o-2024-08-06"


def test_api_model_has_no_weights():
    with pytest.raises(ModelError, match="is an API model"):
        local_path("gpt-4o")


def test_missing_hub_model_says_how_to_point_at_a_local_copy():
    with pytest.raises(ModelError, match="pass the folder instead"):
        load_tokenizer("qwen")


def test_tiny_random_shares_the_smollm2_vocabulary():
    student, teacher = load_tokenizer("tiny-random"), load_tokenizer("tiny-random-teacher")
    assert student.get_vocab() == teacher.get_vocab() == load_tokenizer("smollm2-135m").get_vocab()
    a, b = load_model("tiny-random"), load_model("tiny-random-teacher")
    assert a.config.vocab_size == len(student)
    assert not all((p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.slow
def test_packaged_smollm2_generates_offline():
    model, tokenizer = load_model("smollm2-135m"), load_tokenizer("smollm2-135m")
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12+30? Answer briefly."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert any(ch.isdigit() for ch in text)


def test_cli_models_lists_aliases():
    result = subprocess.run([sys.executable, "-m", "ropd.cli", "models"], capture_output=True, text=True, check=True)
    for alias in ("gpt-4o", "qwen", "smollm2-135m", "tiny-random"):
        assert alias in result.stdout
