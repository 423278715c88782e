"""Answer extraction and checking, pass@k, the outcome reward, and `ropd eval` end to end."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from ropd.cli import main
from ropd.evaluation.eval import EvalError, Sample, evaluate, pass_at_k, score
from ropd.reward.answers import extract_choice, extract_final_answer, is_correct, outcome_reward
from ropd.types import PromptRow

RG_SPEC = "reasoning-gym:gsm_symbolic?size=4&seed=1"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run faster on one thread, and far faster when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- extraction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("First 3, then 4. So \\boxed{7}.", "7"),
        ("\\boxed{\\frac{1}{2}} and later \\boxed{\\dfrac{3}{4}}", "\\dfrac{3}{4}"),
        ("Janet earns 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
        ("so the total is\n#### $1,200", "$1,200"),
        ("Adding them up, the answer is 42.", "42"),
        ("Step 1: 5 + 5 = 10\nFinal Answer: 12 apples", "12 apples"),
        ("<answer>Hart, find, inform</answer>", "Hart, find, inform"),
        ("He has 3 cats and 4 dogs, 7 pets in total, I think.", "7"),
        ("1.5", "1.5"),
        ("  **-3**  ", "-3"),
        ("<think>maybe 5? the answer is 5</think>\nThe answer is 6.", "6"),
        ("<think>The answer is 41</think>Final: I am not sure", "Final: I am not sure"),
        ("<think>still thinking about 7 and 8", None),
        ("\\boxed{12", "12"),  # cut off mid-box: falls back to the last number
        ("", None),
        ("   \n  ", None),
        ("no digits anywhere\nand two lines", None),
        (None, None),
        (123, None),
        (["not", "text"], None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("\\boxed{D}", "D"),
        ("A", "A"),
        ("B) because it is the largest", "B"),
        ("Option (A) is wrong, so it must be (C), not (A)... I pick (C)", "C"),
        ("<think>The answer is (A)</think>The answer is (E)", "E"),
        ("I cannot decide", None),
    ],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


# --- checking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("#### $1,200", "1200", True),
        ("The answer is 1,200 dollars.", "1200", True),
        ("\\boxed{1{,}200}", "1200", True),
        ("The answer is 1,201.", "1200", False),
        ("#### 12 km", "12", True),
        ("#### 12.0", "12", True),
        ("#### -7", "7", False),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("\\boxed{0.5}", "\\frac{1}{2}", True),
        ("\\boxed{1 + x}", "x+1", True),
        ("\\boxed{x + 2}", "x+1", False),
        ("The answer is (B).", "B", True),
        ("The answer is (B).", "C", False),
        ("It is clearly the first one: A", "(A)", True),
        ("The capital is Paris", "paris", False),  # no final answer marked: the whole line is compared
        ("Answer: Paris.", "paris", True),
        ("<think>the answer is 5</think>I don't know.", "5", False),
        ("<think>hmm</think>\n\n#### 5", "5", True),
        ("#### 5", "", False),
        ("#### 5", None, False),
    ],
)
def test_is_correct(completion, reference, expected):
    assert is_correct(completion, reference) is expected


def test_is_correct_reads_conversational_completions():
    messages = [{"role": "assistant", "content": "Let me add: 2 + 2 = 4.\n#### 4"}]
    assert is_correct(messages, "4")
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{9}"}]}]
    assert is_correct(parts, "9")
    assert not is_correct([{"role": "assistant", "content": None}], "9")


def test_reasoning_gym_scorer_is_used_and_partial_credit_is_not_correct():
    # gsm_symbolic's scorer gives 0.01 to a wrong number: that must not count.
    assert is_correct("The total is\n#### $1,200", "1200", task="gsm_symbolic")
    assert not is_correct("#### 1,199", "1200", task="gsm_symbolic")
    assert not is_correct("I have no idea", "1200", task="gsm_symbolic")


def test_chain_sum_answers_in_the_forms_the_cpu_bench_sees():
    # The bench's teacher works left to right; only the number after "The answer is" counts, not the steps.
    assert is_correct("38 - 69 = -31. -31 - 67 = -98. The answer is -98.", "-98", task="chain_sum")
    assert not is_correct("38 - 69 = -31. -31 - 67 = -98. The answer is -97.", "-98", task="chain_sum")
    assert not is_correct("38 - 69 = -31. -31 - 67 = -98.", "-31", task="chain_sum")
    # The packaged student answers in one sentence.
    assert is_correct("The final answer to this arithmetic problem is 15.", "15", task="chain_sum")
    assert not is_correct("The answer is 1.", "-13", task="chain_sum")


def test_reasoning_gym_scorer_gets_metadata_as_dict_or_json():
    import reasoning_gym

    entry = reasoning_gym.create_dataset("word_sorting", size=1, seed=0)[0]
    right = f"<answer>{entry['answer']}</answer>"
    words = entry["metadata"]["sorted_words"]
    wrong = "<answer>" + ", ".join([words[1], words[0], *words[2:]]) + "</answer>"  # partial credit only
    for metadata in (entry["metadata"], json.dumps(entry["metadata"])):
        assert is_correct(right, entry["answer"], task="word_sorting", metadata=metadata)
        assert not is_correct(wrong, entry["answer"], task="word_sorting", metadata=metadata)
    # without metadata the scorer cannot run; the answers are compared directly instead
    assert is_correct(right, entry["answer"], task="word_sorting")
    assert not is_correct(wrong, entry["answer"], task="word_sorting")


def test_checking_never_raises_on_junk():
    rng = random.Random(0)
    specials = ["\\boxed{", "\\frac{", "</think>", "<think>", "####", "é", "∑"]
    alphabet = [*"0123456789{}()[]\\$#*_-+=/.,:;<>|^%&!? abcxyzABC\n\t", *specials]
    junk = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    junk += [
        "\\boxed{" * 50,
        "}" * 50,
        "9" * 5000,
        "1/0",
        "#### 1/0",
        "\\boxed{\\frac{1}{0}}",
        "#### 1e999",
        "x" * 20000,
        "$$$$",
        "\x00\x01",
    ]
    references = ["5", "1/2", "x+1", "B", "Paris", "\\frac{1}{0}"]
    for text in junk:
        for reference in references:
            assert isinstance(is_correct(text, reference), bool)
        assert isinstance(is_correct(text, "288", task="gsm_symbolic"), bool)
        assert isinstance(is_correct(text, "a, b", task="word_sorting"), bool)
    for odd in (None, 3, 4.5, {"content": 7}, [None, 1], [{"role": "assistant"}]):
        assert is_correct(odd, "5") is False


# --- pass@k -----------------------------------------------------------------------------------------


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) holding at least one correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_1_is_the_fraction_correct_and_bad_arguments_raise():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    for n, c, k in ((3, 4, 1), (3, 1, 4), (3, 1, 0), (3, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_score_aggregates_samples():
    rows = [
        PromptRow(id="a", prompt=[{"role": "user", "content": "2+3?"}], answer="5"),
        PromptRow(id="b", prompt=[{"role": "user", "content": "?"}], answer="1"),
    ]
    samples = [
        [Sample("\\boxed{5}", 4, False), Sample("it is 7", 3, False), Sample("#### 5", 3, False)],
        [Sample("no idea", 2, False), Sample("2", 1, False), Sample("...", 8, True)],
    ]
    settings = {"n_samples": 3, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "seed": 0}
    result = score(rows, samples, k=2, model="m", backend="transformers", seconds=1.0, settings=settings)
    assert [r.correct for r in result.records] == [2, 0]
    assert result.accuracy == pytest.approx(2 / 6)
    assert result.pass_at_k == pytest.approx((1.0 + 0.0) / 2)
    assert result.answered == pytest.approx(5 / 6)  # "..." gives no answer; a one-line reply is its own answer
    assert result.truncated == pytest.approx(1 / 6)
    assert result.records[0].extracted == "5"


# --- outcome reward ---------------------------------------------------------------------------------


def test_outcome_reward_on_conversational_completions():
    prompts = [[{"role": "user", "content": "q"}]] * 4
    completions = [
        [{"role": "assistant", "content": "2 + 2 = 4\n#### 4"}],
        [{"role": "assistant", "content": "#### 5"}],
        [{"role": "assistant", "content": "<think>1,200</think>The answer is $1,200."}],
        [{"role": "assistant", "content": "\\boxed{B}"}],
    ]
    rewards = outcome_reward(prompts, completions, answer=["4", "4", "1200", "B"], task=["gsm_symbolic", "gsm_symbolic", None, ""])
    assert rewards == [1.0, 0.0, 1.0, 1.0]
    assert all(isinstance(r, float) for r in rewards)


def test_outcome_reward_takes_strings_extra_columns_and_missing_references():
    rewards = outcome_reward(
        ["q"] * 3, ["#### 3", "#### 3", "#### 3"], answer=["3", "", None], trainer_state=None, log_metric=print, id=["a", "b", "c"]
    )
    assert rewards == [1.0, None, None]
    with pytest.raises(ValueError, match="answer"):
        outcome_reward(["q"], ["#### 3"])


# --- generation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from ropd.endpoints.models import load_model, load_tokenizer

    return load_model("tiny-random"), load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def rg_prompts():
    from ropd.data import load_prompts

    return load_prompts(RG_SPEC)


def test_evaluate_in_memory_restores_state_and_samples_n(tiny, rg_prompts):
    model, tokenizer = tiny
    model.train()
    tokenizer.padding_side = "right"
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    result = evaluate(model, tokenizer, rg_prompts[:2], n_samples=3, k=2, max_new_tokens=6, temperature=1.0, batch_size=4, progress=False)
    assert torch.rand(1) == expected_next  # the caller's RNG stream is untouched
    assert model.training and tokenizer.padding_side == "right"
    assert result.num_prompts == 2 and result.n_samples == 3 and result.k == 2
    assert [r.samples for r in result.records] == [3, 3]
    assert [r.id for r in result.records] == [p.id for p in rg_prompts[:2]]
    assert 0 < result.mean_completion_tokens <= 6


def test_evaluate_greedy_is_deterministic_and_shared_across_samples(tiny, rg_prompts):
    model, tokenizer = tiny
    first = evaluate(model, tokenizer, rg_prompts[:3], n_samples=2, max_new_tokens=6, batch_size=2, progress=False)
    second = evaluate(model, tokenizer, rg_prompts[:3], max_new_tokens=6, batch_size=3, progress=False, seed=9)
    assert [r.completion for r in first.records] == [r.completion for r in second.records]
    assert all(r.correct in (0, 2) for r in first.records)  # greedy: n identical samples


def test_evaluate_rejects_bad_settings(tiny, rg_prompts):
    model, tokenizer = tiny
    with pytest.raises(EvalError, match="k must be"):
        evaluate(model, tokenizer, rg_prompts, n_samples=2, k=3, progress=False)
    with pytest.raises(EvalError, match="no prompts"):
        evaluate(model, tokenizer, [], progress=False)


# --- the command ------------------------------------------------------------------------------------


def test_cli_eval_end_to_end(capsys, tmp_path):
    args = ["eval", "--model", "tiny-random", "--dataset", RG_SPEC, "-n", "2", "-k", "1", "--max-new-tokens", "8", "--temperature", "0.8"]
    assert main(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["pass_at_k"] <= 1.0
    assert result["num_prompts"] == 4 and result["n_samples"] == 2 and result["k"] == 1
    assert result["model"] == "tiny-random" and result["dataset"] == RG_SPEC and result["backend"] == "transformers"
    assert result["seconds"] > 0
    assert [r["id"] for r in result["records"]] == [f"gsm_symbolic-s1-{i}" for i in range(4)]
    assert all(set(r) == {"id", "reference", "correct", "samples", "extracted", "completion"} for r in result["records"])
    assert "avg@2" in captured.err

    out = tmp_path / "results" / "eval.json"
    assert main([*args[:-2], "--max-prompts", "2", "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["num_prompts"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "reasoning-gym:no_such_task"], "no_such_task"),
        (["--dataset", "missing.jsonl"], "missing.jsonl"),
        (["--dataset", RG_SPEC, "-n", "2", "-k", "3"], "k must be"),
        (["--dataset", RG_SPEC, "--temperature", "-1"], "temperature"),
        (["--dataset", RG_SPEC, "--backend", "vllm"], "vllm"),
    ],
)
def test_cli_eval_bad_input_exits_2(capsys, extra, message):
    if "vllm" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present, so the vllm backend may be usable")
    assert main(["eval", "--model", "tiny-random", *extra]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_cli_eval_refuses_api_models_and_unwritable_output(capsys, tmp_path):
    assert main(["eval", "--model", "gpt-4o", "--dataset", RG_SPEC]) == 2
    assert "API model" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny-random", "--dataset", RG_SPEC, "--output", str(tmp_path)]) == 2
    assert "--output" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cli_eval_real_model_produces_parsed_answers(capsys):
    spec = "reasoning-gym:gsm_symbolic?size=3&seed=1"
    assert main(["eval", "--model", "smollm2-135m", "--dataset", spec, "--max-new-tokens", "48", "--batch-size", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_prompts"] == 3 and 0.0 <= result["accuracy"] <= 1.0
    assert any(r["extracted"] is not None for r in result["records"])
    assert all(len(r["completion"]) > 20 for r in result["records"])
