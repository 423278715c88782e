"""The reasoning rule and completion text shared by the reward, the prompts, the targets check and evaluation."""

import pytest

from ropd.config import JudgeConfig
from ropd.reward.answers import answer_text, completion_text, extract_final_answer, final_text, is_correct
from ropd.reward.judge import verifier_messages
from ropd.reward.rubrics import meets_consensus
from ropd.reward.targets import GroundedTarget, meets_target
from ropd.testing.judge_scripts import blocks
from ropd.types import Criterion, Rubric

UNCLOSED = ["<think>never closed, cut at max tokens 42", "Sure. <think>the answer is 42, let me check"]


@pytest.mark.parametrize(
    ("completion", "final", "shown"),
    [
        ("<think>a</think>x</think> 42 ", " 42 ", "42"),
        ("plain answer\n", "plain answer\n", "plain answer"),
        ("<think>reasoning</think>\n\n", "\n\n", ""),
        *((text, None, "") for text in UNCLOSED),
    ],
)
def test_the_answer_part_follows_the_last_think_and_an_unclosed_think_has_none(completion, final, shown):
    assert final_text(completion) == final
    assert answer_text(completion) == shown


@pytest.mark.parametrize("completion", UNCLOSED)
def test_an_unclosed_think_is_no_answer_for_the_judge_the_checker_the_consensus_and_the_targets(completion):
    """Every reader agrees: what the judge is shown is empty, and no check finds the 42 written while reasoning."""
    rubric = Rubric(prompt_id="p", criteria=[Criterion(id="c1", text="states 42", points=1)])
    messages, _ = verifier_messages("What is 6 x 7?", rubric, [completion], JudgeConfig())
    assert list(blocks(messages[-1]["content"], "ANSWER").values()) == [""]
    assert extract_final_answer(completion) is None
    assert not is_correct(completion, "42")
    assert not meets_consensus(completion, "42")
    assert not meets_target(GroundedTarget(text="42", kind="final", number="42"), completion)
    assert not meets_target(GroundedTarget(text="42", kind="intermediate", number="42"), completion)


def test_completion_text_keeps_only_assistant_turns_and_never_raises():
    assert completion_text("plain") == "plain"
    assert completion_text(None) == ""
    assert completion_text({"role": "assistant", "content": "a"}) == "a"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    assert completion_text([{"content": "no role counts as assistant"}]) == "no role counts as assistant"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]) == "xy"
    multi = [{"role": "assistant", "content": "call"}, {"role": "tool", "content": "out"}, {"role": "assistant", "content": "done"}]
    assert completion_text(multi) == "call\ndone"
    assert completion_text([{"role": "tool", "content": "out"}]) == ""  # no assistant turn: no text
    assert completion_text([{"role": "assistant", "content": None}, {"role": "assistant", "content": 7}]) == "\n7"


def test_a_text_that_marks_no_answer_has_none_unless_the_task_is_numeric():
    essay = "Take 5 mg twice daily with food. See a doctor if it persists."
    assert extract_final_answer(essay) == "5"  # a numeric task: its last number
    assert extract_final_answer(essay, numeric=False) is None
    assert extract_final_answer("The answer is rest.", numeric=False) == "rest"  # a marked answer stays
    assert not is_correct(essay, "rest and fluids")  # a text reference: no number guessed
    assert is_correct("6*7 makes 42 in all", "42")


def test_open_ended_teacher_answers_give_no_spurious_consensus():
    from ropd.reward.rubrics import consensus_answer

    essays = ["Rest for 3 days and drink fluids. See a doctor if it persists.", "About 3 days of rest help. Drink a lot of water."]
    assert consensus_answer(essays) is None  # before: both "3", a consensus about nothing the question asked
    assert consensus_answer(["6*7 = 42 because", "It is **42**", "I think 42."]) == "42"  # numeric: last numbers count
    unsure = "Hard to tell.\nIt depends."  # several lines, no marked answer: no final answer
    assert consensus_answer(["The answer is 7", "The answer is 7", unsure, unsure, unsure]) is None  # 2 of 5 give one
