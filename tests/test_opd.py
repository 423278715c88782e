"""White-box distillation: vocabulary check, SOD steps and weights, the OPD reverse-KL loss, short CPU training runs."""

import math

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig

from ropd.config import MethodConfig
from ropd.data import load_prompts, to_dataset
from ropd.endpoints.models import load_model, load_tokenizer
from ropd.training.opd import (
    OPDTrainer,
    SODTrainer,
    VocabularyMismatchError,
    build_white_box_trainer,
    check_same_vocabulary,
    reverse_kl_per_token,
    sod_advantages,
    step_ids_from_delimiter,
    step_ids_from_turns,
    step_weights,
)

EPS = 1e-6


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def dataset():
    return to_dataset(load_prompts("reasoning-gym:gsm_symbolic?size=4&seed=0"))


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[UNK]")


def grpo_args(tmp_path, **overrides) -> GRPOConfig:
    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        scale_rewards="none",
        seed=0,
    )
    return GRPOConfig(**{**settings, **overrides})


def padded_batch(tokenizer) -> dict:
    """One generation batch of two rows, left-padded prompts and a right-padded completion, as TRL hands it to the loss."""
    pad = tokenizer.pad_token_id
    return {
        "prompt_ids": torch.tensor([[5, 17, 300], [pad, 44, 9]]),
        "prompt_mask": torch.tensor([[1, 1, 1], [0, 1, 1]]),
        "completion_ids": torch.tensor([[71, 72, 73, 74], [81, 82, pad, pad]]),
        "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "num_items_in_batch": torch.tensor(6.0),  # completion tokens of the whole generation batch
    }


def id_sum_reward(completion_ids, **_):
    """A reward computable from the token ids alone, so a test can recompute the sequence advantage."""
    return [float(sum(ids) % 5) for ids in completion_ids]


# --- vocabulary ------------------------------------------------------------------------------------


def test_same_vocabulary_passes_for_student_and_teacher_aliases(tokenizer):
    check_same_vocabulary(tokenizer, load_tokenizer("tiny-random-teacher"), "tiny-random-teacher")


def test_vocabulary_of_another_size_is_refused_with_advice(tokenizer):
    with pytest.raises(VocabularyMismatchError, match=r"teacher 'tiny-words'.*--method ropd"):
        check_same_vocabulary(tokenizer, word_tokenizer(["[UNK]", "a", "b"]), "tiny-words")


def test_same_size_but_different_mapping_is_refused():
    student, teacher = word_tokenizer(["[UNK]", "a", "b"]), word_tokenizer(["[UNK]", "b", "a"])
    with pytest.raises(VocabularyMismatchError, match="mappings differ"):
        check_same_vocabulary(student, teacher, "swapped")
    assert issubclass(VocabularyMismatchError, ValueError)


def test_factory_checks_the_teacher_tokenizer_before_building(tmp_path, tokenizer, dataset):
    with pytest.raises(VocabularyMismatchError, match="--method ropd"):
        build_white_box_trainer(
            "opd",
            model=load_model("tiny-random"),
            teacher_model=load_model("tiny-random-teacher"),
            processing_class=tokenizer,
            teacher_processing_class=word_tokenizer(["[UNK]", "a"]),
            args=grpo_args(tmp_path),
            train_dataset=dataset,
            reward_funcs=[id_sum_reward],
            method_config=MethodConfig(name="opd"),
        )


def test_teacher_with_fewer_logits_than_the_tokenizer_is_refused(tmp_path, tokenizer, dataset):
    small = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(VocabularyMismatchError, match="100 output logits"):
        OPDTrainer(
            model=load_model("tiny-random"),
            reward_funcs=[id_sum_reward],
            args=grpo_args(tmp_path),
            train_dataset=dataset,
            processing_class=tokenizer,
            teacher_model=small,
        )


def test_unknown_method_and_sod_without_reward_are_refused(tmp_path, tokenizer, dataset):
    common = dict(
        model=None, teacher_model=None, processing_class=tokenizer, args=None, train_dataset=dataset, method_config=MethodConfig()
    )
    with pytest.raises(ValueError, match="one of opd, sod"):
        build_white_box_trainer("ropd", reward_funcs=[id_sum_reward], **common)
    with pytest.raises(ValueError, match="sod needs a reward"):
        build_white_box_trainer("sod", reward_funcs=[], **common)


# --- SOD steps and weights ------------------------------------------------------------------------


def test_step_weights_and_advantages_match_hand_computed_values():
    signal = torch.tensor(
        [
            [0.2, -0.4, 0.1, 0.1, -0.1, 1.0, -2.0, 9.0],  # steps 0,0 | 1,1,1 | 2,2, then padding
            [0.5, 0.5, -0.5, -1.0, 7.0, 7.0, 7.0, 7.0],  # steps 0,0,0 | 1, then padding
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # two steps with no drift at all
        ]
    )
    step_ids = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 0], [0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    out = step_weights(signal, step_ids, mask, eps=EPS, delta=0.2)

    # d_1 = mean(|0.2|, |-0.4|) = 0.3, d_2 = 0.1, d_3 = mean(1, 2) = 1.5 ; d_1 = 0.5, d_2 = 1.0 ; zeros
    torch.testing.assert_close(out["drift"], torch.tensor([[0.3, 0.1, 1.5], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert out["exists"].tolist() == [[True, True, True], [True, True, False], [True, True, False]]
    w3 = (0.3 + EPS) / (1.5 + EPS)
    w2_row1 = (0.5 + EPS) / (1.0 + EPS)
    # w_2 of row 0 is (0.3 / 0.1) = 3, capped at 1 + delta; no drift at all gives eps / eps = 1
    torch.testing.assert_close(out["weight"], torch.tensor([[1.0, 1.2, w3], [1.0, w2_row1, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(out["token_weight"][0], torch.tensor([1.0, 1.0, 1.2, 1.2, 1.2, w3, w3, 0.0]))
    torch.testing.assert_close(out["token_weight"][1], torch.tensor([1.0, 1.0, 1.0, w2_row1, 0.0, 0.0, 0.0, 0.0]))

    advantages = sod_advantages(torch.tensor([0.5, -1.0, 0.0]), signal, out["token_weight"], mask, coef=1.0)
    expected_row0 = [0.5 + 0.2, 0.5 - 0.4, 0.5 + 1.2 * 0.1, 0.5 + 1.2 * 0.1, 0.5 - 1.2 * 0.1, 0.5 + w3, 0.5 - 2 * w3, 0.0]
    torch.testing.assert_close(advantages[0], torch.tensor(expected_row0))
    torch.testing.assert_close(advantages[1], torch.tensor([-0.5, -0.5, -1.5, -1.0 - w2_row1, 0.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(advantages[2], torch.zeros(8))
    # c scales the teacher term only
    doubled = sod_advantages(torch.tensor([0.5, -1.0, 0.0]), signal, out["token_weight"], mask, coef=2.0)
    torch.testing.assert_close(doubled[0, 2], torch.tensor(0.5 + 2 * 1.2 * 0.1))


def test_delta_sets_the_cap():
    signal = torch.tensor([[0.3, 0.1]])
    out = step_weights(signal, torch.tensor([[0, 1]]), torch.ones(1, 2), eps=EPS, delta=0.5)
    torch.testing.assert_close(out["weight"], torch.tensor([[1.0, 1.5]]))


def test_turn_steps_are_runs_of_assistant_tokens_between_tool_outputs():
    # 1 = assistant token, 0 = tool output (inside) or padding (at the end)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [0] * 11])
    assert step_ids_from_turns(mask).tolist() == [[0, 0, 0, 0, 1, 1, 0, 2, 2, 0, 0], [0] * 11, [0] * 11]


def _padded(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def _step_texts(tokenizer, ids: torch.Tensor, mask: torch.Tensor, steps: torch.Tensor) -> list[str]:
    valid = mask.bool()
    return [tokenizer.decode(ids[valid & (steps == k)].tolist()) for k in range(int(steps[valid].max()) + 1)]


def test_blank_lines_split_an_answer_into_steps(tokenizer):
    texts = [
        "First, add 3 and 4.\n\nThen multiply by 2:\n\n\n7 * 2 = 14 é\n\nAnswer: 14",
        "\n\nA leading blank line opens no step.\n\nEnd",
        "One step only",
    ]
    ids, mask = _padded(tokenizer, texts)
    steps = step_ids_from_delimiter(ids, mask, tokenizer)
    expected = ["First, add 3 and 4.\n\n", "Then multiply by 2:\n\n\n", "7 * 2 = 14 é\n\n", "Answer: 14"]
    assert _step_texts(tokenizer, ids[0], mask[0], steps[0]) == expected
    assert _step_texts(tokenizer, ids[1], mask[1], steps[1]) == ["\n\nA leading blank line opens no step.\n\n", "End"]
    assert _step_texts(tokenizer, ids[2], mask[2], steps[2]) == ["One step only"]
    assert (steps[~mask.bool()] == 0).all()


def test_custom_delimiter(tokenizer):
    ids, mask = _padded(tokenizer, ["Step: add. ### Step: multiply. ### done ###"])
    steps = step_ids_from_delimiter(ids, mask, tokenizer, delimiter="###")
    assert _step_texts(tokenizer, ids[0], mask[0], steps[0]) == ["Step: add. ###", " Step: multiply. ###", " done ###"]


# --- OPD loss ---------------------------------------------------------------------------------------


def _brute_force_kl(student_row: list[float], teacher_row: list[float]) -> float:
    """KL(p_s || p_t) with explicit loops over the vocabulary."""
    s_max, t_max = max(student_row), max(teacher_row)
    s_norm = s_max + math.log(sum(math.exp(x - s_max) for x in student_row))
    t_norm = t_max + math.log(sum(math.exp(x - t_max) for x in teacher_row))
    total = 0.0
    for s, t in zip(student_row, teacher_row, strict=True):
        log_ps, log_pt = s - s_norm, t - t_norm
        total += math.exp(log_ps) * (log_ps - log_pt)
    return total


def test_reverse_kl_matches_brute_force_on_tiny_models():
    student, teacher = load_model("tiny-random"), load_model("tiny-random-teacher")
    ids = torch.tensor([[1, 520, 33, 1234, 98]])
    with torch.no_grad():
        s_logits, t_logits = student(ids).logits[0], teacher(ids).logits[0]
    fast = reverse_kl_per_token(s_logits, t_logits)
    brute = [_brute_force_kl(s_logits[i].tolist(), t_logits[i].tolist()) for i in range(ids.size(1))]
    torch.testing.assert_close(fast, torch.tensor(brute), rtol=1e-4, atol=1e-7)
    assert (fast > 0).all()


def test_opd_loss_is_token_mean_reverse_kl_over_completion_tokens(tmp_path, tokenizer, dataset):
    """The trainer's loss on a padded batch equals a per-sequence brute-force computation without padding."""
    student, teacher = load_model("tiny-random"), load_model("tiny-random-teacher")
    trainer = build_white_box_trainer(
        "opd",
        model=student,
        teacher_model=teacher,
        processing_class=tokenizer,
        args=grpo_args(tmp_path),
        train_dataset=dataset,
        reward_funcs=[],
        method_config=MethodConfig(name="opd"),
    )
    pad = tokenizer.pad_token_id
    prompts = [[5, 17, 300], [44, 9]]
    completions = [[71, 72, 73, 74], [81, 82]]
    inputs = {
        "prompt_ids": torch.tensor([[5, 17, 300], [pad, 44, 9]]),
        "prompt_mask": torch.tensor([[1, 1, 1], [0, 1, 1]]),
        "completion_ids": torch.tensor([[71, 72, 73, 74], [81, 82, pad, pad]]),
        "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "num_items_in_batch": torch.tensor(6),
    }
    trainer.model.eval()
    loss = trainer._compute_loss(trainer.model, inputs)

    brute = []
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            s_logits, t_logits = student(ids).logits[0], teacher(ids).logits[0]
        for j in range(len(completion)):
            position = len(prompt) - 1 + j  # the logits that predict completion token j
            brute.append(_brute_force_kl(s_logits[position].tolist(), t_logits[position].tolist()))
    torch.testing.assert_close(loss.detach(), torch.tensor(sum(brute) / len(brute)), rtol=1e-4, atol=1e-7)
    assert trainer._metrics["eval"]["opd/reverse_kl"] == pytest.approx([sum(brute) / len(brute)], rel=1e-4)
    loss.backward()
    assert student.model.embed_tokens.weight.grad.abs().sum() > 0


# --- SOD advantages inside the trainer ----------------------------------------------------------------


def _plain_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logps[positions, torch.tensor(completion)]


@pytest.mark.slow
def test_sod_advantages_are_sequence_advantage_plus_weighted_teacher_signal(tmp_path, tokenizer, dataset):
    student, teacher = load_model("tiny-random"), load_model("tiny-random-teacher")
    trainer = build_white_box_trainer(
        "sod",
        model=student,
        teacher_model=teacher,
        processing_class=tokenizer,
        args=grpo_args(tmp_path, per_device_train_batch_size=4, max_completion_length=6),
        train_dataset=dataset,
        reward_funcs=[id_sum_reward],
        method_config=MethodConfig(name="sod", sod_coef=1.0),
    )
    trainer.model.train()
    rows = [dataset[0], dataset[0], dataset[1], dataset[1]]
    output = trainer._generate_and_score_completions(rows)

    mask = output["completion_mask"].float()
    signal = torch.zeros_like(mask)
    rewards = []
    for i in range(4):
        prompt = output["prompt_ids"][i][output["prompt_mask"][i].bool()].tolist()
        completion = output["completion_ids"][i][output["completion_mask"][i].bool()].tolist()
        student_logps = _plain_logps(student, prompt, completion)
        torch.testing.assert_close(output["old_per_token_logps"][i, : len(completion)], student_logps, rtol=1e-4, atol=1e-4)
        signal[i, : len(completion)] = _plain_logps(teacher, prompt, completion) - student_logps
        rewards.append(sum(completion) % 5)
    rewards = torch.tensor(rewards, dtype=torch.float32)
    sequence_advantage = rewards - rewards.view(2, 2).mean(dim=1).repeat_interleave(2)
    weights = step_weights(signal, step_ids_from_delimiter(output["completion_ids"], mask, tokenizer), mask)["token_weight"]
    expected = (sequence_advantage[:, None] + weights * signal) * mask
    assert output["advantages"].shape == mask.shape
    torch.testing.assert_close(output["advantages"], expected, rtol=1e-4, atol=1e-4)
    logged = {"sod/signal_mean", "sod/step_weight_mean", "sod/step_weight_min", "sod/frac_steps_downweighted"}
    assert logged <= set(trainer._metrics["train"])


# --- short training runs ------------------------------------------------------------------------------


def _train(method: str, tmp_path, tokenizer, dataset) -> tuple[list[dict], float]:
    student = load_model("tiny-random")
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    trainer = build_white_box_trainer(
        method,
        model=student,
        teacher_model=load_model("tiny-random-teacher"),
        processing_class=tokenizer,
        args=grpo_args(tmp_path),
        train_dataset=dataset,
        reward_funcs=[id_sum_reward],
        method_config=MethodConfig(name=method),
        teacher_processing_class=load_tokenizer("tiny-random-teacher"),
    )
    assert isinstance(trainer, OPDTrainer if method == "opd" else SODTrainer)
    trainer.train()
    change = max((p.detach() - before[name]).abs().max().item() for name, p in student.named_parameters())
    return [h for h in trainer.state.log_history if "loss" in h], change


@pytest.mark.slow
def test_opd_trains_the_student_and_logs_reverse_kl(tmp_path, tokenizer, dataset):
    logs, change = _train("opd", tmp_path, tokenizer, dataset)
    assert change > 0
    assert len(logs) == 2
    for entry in logs:
        assert entry["opd/reverse_kl"] >= 0 and math.isfinite(entry["opd/reverse_kl"])
        assert entry["loss"] == pytest.approx(entry["opd/reverse_kl"], rel=1e-4)  # one micro-batch per step
        assert "reward" in entry
        assert entry["time/sample"] > 0 and entry["time/teacher_logits"] > 0  # every phase is timed


@pytest.mark.slow
def test_sod_trains_the_student_and_logs_step_weights(tmp_path, tokenizer, dataset):
    logs, change = _train("sod", tmp_path, tokenizer, dataset)
    assert change > 0
    assert len(logs) == 2
    for entry in logs:
        assert math.isfinite(entry["sod/signal_mean"])
        assert entry["sod/step_weight_min"] <= entry["sod/step_weight_mean"] <= 1.2 + 1e-6
        assert 0.0 <= entry["sod/frac_steps_downweighted"] <= 1.0
        assert entry["sod/steps_per_completion"] >= 1
        assert entry["time/sample"] > 0 and entry["time/teacher_logits"] > 0 and entry["time/reward"] >= 0


def test_opd_loss_and_gradient_agree_with_trls_distillation_trainer_at_beta_1(tmp_path, tokenizer, dataset):
    """ropd's opd is the yardstick of the bench: on one padded batch (same student, teacher and completions) its loss and
    every gradient equal those of TRL's DistillationTrainer set to reverse KL (beta 1), whose loss is also the token mean
    of the full-vocabulary KL(student || teacher) over the completion tokens of the generation batch."""
    from trl import DistillationConfig, DistillationTrainer

    common = dict(use_cpu=True, bf16=False, per_device_train_batch_size=2, max_completion_length=8, report_to=[], save_strategy="no")
    ours = build_white_box_trainer(
        "opd",
        model=load_model("tiny-random"),
        teacher_model=load_model("tiny-random-teacher"),
        processing_class=tokenizer,
        args=grpo_args(tmp_path / "ours", temperature=1.0),
        train_dataset=dataset,
        reward_funcs=[],
        method_config=MethodConfig(name="opd"),
    )
    args = DistillationConfig(output_dir=str(tmp_path / "trl"), beta=1.0, temperature=1.0, **common)
    trl_trainer = DistillationTrainer(
        model=load_model("tiny-random"),
        teacher_model=load_model("tiny-random-teacher"),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    inputs = padded_batch(tokenizer)
    losses, grads = [], []
    for trainer in (ours, trl_trainer):
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # as the training loop sets it: one micro-batch per step
        loss = trainer.compute_loss(trainer.model, dict(inputs))
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-5)
    assert losses[0] > 0 and grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(ours.model.parameters()))
    for name, grad in grads[0].items():
        # The largest gradient entry is ~1e-3 on these tiny models: compare relatively too, not only to 1e-5.
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-8, msg=lambda m, name=name: f"{name}: {m}")


def test_teacher_dtype_loads_the_white_box_teacher_in_bfloat16_and_the_loss_follows(tmp_path, tokenizer, dataset):
    """teacher.dtype: bfloat16 halves a CPU teacher's memory; the float32 student's loss moves only by bfloat16 rounding."""
    from ropd.config import RunConfig
    from ropd.training.run import white_box_teacher

    def config(dtype: str) -> RunConfig:
        return RunConfig.model_validate(
            {"method": {"name": "opd"}, "student": {"model": "tiny-random"}, "teacher": {"model": "tiny-random-teacher", "dtype": dtype}}
        )

    teachers = {dtype: white_box_teacher(config(dtype), tokenizer) for dtype in ("auto", "bfloat16")}
    assert {p.dtype for p in teachers["auto"].parameters()} == {torch.float32}  # auto = the student's dtype (float32 on CPU)
    assert {p.dtype for p in teachers["bfloat16"].parameters()} == {torch.bfloat16}
    inputs = padded_batch(tokenizer)
    losses = {}
    for dtype, teacher in teachers.items():
        trainer = build_white_box_trainer(
            "opd",
            model=load_model("tiny-random"),
            teacher_model=teacher,
            processing_class=tokenizer,
            args=grpo_args(tmp_path / dtype, temperature=1.0),
            train_dataset=dataset,
            reward_funcs=[],
            method_config=MethodConfig(name="opd"),
        )
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        loss = trainer.compute_loss(trainer.model, dict(inputs))
        loss.backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainer.model.parameters())
        losses[dtype] = loss.item()
    assert losses["auto"] > 0
    assert losses["bfloat16"] == pytest.approx(losses["auto"], rel=0.05)
