"""LoRA training (training.lora_rank): adapters train, the frozen weights do not move, the final model is a plain merged model."""

import json

import pytest
import torch

from ropd.config import ConfigError, load_config
from ropd.endpoints.models import load_model
from ropd.training.run import lora_config, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def opd_config(out, **overrides):
    return load_config(
        overrides={
            "method.name": "opd",
            "teacher.model": "tiny-random-teacher",
            "student.model": "tiny-random",
            "data.dataset": "reasoning-gym:chain_sum?size=4&seed=0",
            "training.max_steps": 2,
            "training.prompts_per_step": 2,
            "training.num_generations": 2,
            "training.max_completion_length": 8,
            "training.learning_rate": 1e-2,
            "training.save_steps": 1,
            "training.lora_rank": 4,
            "output.dir": str(out),
            **overrides,
        }
    )


def test_lora_run_moves_only_the_adapted_layers_and_saves_a_merged_model(tmp_path):
    out = tmp_path / "run"
    final = train(opd_config(out))
    before, after = dict(load_model("tiny-random").named_parameters()), dict(load_model(str(final)).named_parameters())
    assert before.keys() == after.keys()  # a plain model: no lora_A/lora_B, no peft wrapper names
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved, "the merged adapters changed no weight"
    # Only linear layers carry adapters: embeddings and norms are frozen and come back bit-identical.
    assert all(name.endswith("proj.weight") for name in moved), sorted(moved)
    assert not (final / "adapter_config.json").exists()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if "opd/reverse_kl" in m] == [1, 2]

    # Resuming a LoRA run continues from its adapter checkpoint.
    train(opd_config(out, **{"training.max_steps": 3, "output.resume": True}))
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if "opd/reverse_kl" in m] == [1, 2, 3]


def test_lora_settings_map_onto_peft(monkeypatch, tmp_path):
    config = load_config(overrides={"training.lora_rank": 8, "training.lora_target_modules": ["q_proj", "v_proj"]})
    lora = lora_config(config.training)
    assert (lora.r, lora.lora_alpha, set(lora.target_modules)) == (8, 16, {"q_proj", "v_proj"})
    assert lora_config(load_config().training) is None  # unset: full fine-tuning

    import builtins

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft":
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ConfigError, match=r"lora_rank needs peft: pip install 'ropd\[lora\]'"):
        lora_config(config.training)
    # `ropd train` stops on it before any model loads or any server starts.
    loaded = []
    monkeypatch.setattr("ropd.training.run.load_model", lambda *a, **k: loaded.append(a))
    settings = {"training.lora_rank": 8, "method.name": "grpo", "student.model": "tiny-random", "output.dir": str(tmp_path)}
    run = load_config(overrides=settings)
    with pytest.raises(ConfigError, match="lora_rank needs peft"):
        train(run)
    assert not loaded
