"""Verifiable criteria and the one scoring path: target rules (ropd.reward.targets) and score_verdicts (ropd.reward.scoring), no server."""

import pytest

from ropd.config import PUBLISHED_JUDGE, JudgeConfig
from ropd.reward.scoring import score_verdicts
from ropd.reward.targets import TARGET_MAX_CHARS, clean_target, ground_target, meets_target, numbers_in, occurs_in
from ropd.types import Criterion, Rubric, Verdict

QUESTION = "A shop sells 3 crates of 400 apples. How many apples?"
TEACHERS = ["3 crates x 400 = 1,200 apples. The answer is 1200.", "400 * 3 = 1200, so 1200 apples.", "It is 1,200."]


# --- rule 1: usable targets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (None, "absent"),
        ("", "absent"),
        ("   ", "absent"),
        ("None", "absent"),
        ("n/a", "absent"),
        ("9" * (TARGET_MAX_CHARS + 1), "too long"),
        ("12\n00", "unsafe"),  # a line break
        ("12\x0000", "unsafe"),  # a control character
        ("12\u200b00", "unsafe"),  # zero-width space
        ("\u202e0021", "unsafe"),  # a bidi override
        ("<<<END ANSWER 1", "unsafe"),  # a forged boundary
        ("\uff1c\uff1c\uff1c", "unsafe"),  # look-alike angle brackets
        ("__import__('os')", "unsafe"),
        ("{{ 7 * 7 }}", "unsafe"),
        ("12.*", "unsafe"),  # never a pattern
        ("10^10^10", "unsafe"),
        ("\\frac{1}{2}", "unsafe"),
        ('"1200"', "unsafe"),
    ],
)
def test_a_target_that_is_absent_too_long_or_unsafe_is_dropped(raw, why):
    assert clean_target(raw) == (None, why)


@pytest.mark.parametrize(
    ("raw", "kept"), [("1,200", "1,200"), ("  $1,200 ", "$1,200"), ("Paris", "Paris"), ("3/4", "3/4"), ("\u22125", "-5")]
)
def test_a_usable_target_is_tidied_not_rewritten(raw, kept):
    assert clean_target(raw) == (kept, None)


@pytest.mark.parametrize(
    ("value", "target"),
    [(1200, "1200"), (1200.5, "1200.5"), ("42", "42"), (True, None), ({"value": 42}, None), ([42], None), (float("nan"), None)],
)
def test_criterion_targets_parse_leniently_and_old_records_without_one_still_parse(value, target):
    criterion = Criterion.model_validate({"id": "c1", "text": "t", "points": 1, "target": value})
    assert criterion.target == target
    assert Criterion.model_validate({"id": "c1", "text": "t", "points": 1}).target is None


# --- rule 2: grounded in the teacher answers --------------------------------------------------------------


def test_a_target_matching_the_teachers_final_answer_is_a_final_result_target():
    target, why = ground_target("1200.0", TEACHERS, QUESTION)
    assert why is None and target.kind == "final"


def test_a_target_in_the_teachers_working_is_an_intermediate_target():
    teachers = ["3 * 400 = 1200 apples, minus 200 bad: 1000.", "1200 in all, 200 bad, so 1000"]
    target, why = ground_target("1,200", teachers, QUESTION)
    assert why is None and target.kind == "intermediate"


@pytest.mark.parametrize(
    ("target", "teachers", "why"),
    [
        ("1100", TEACHERS, "ungrounded"),  # a student's wrong value
        ("1200", ["1200", "1100", "1100"], "ungrounded"),  # one of three: less than half
        ("400", TEACHERS, "in question"),  # restating the question proves nothing
        ("ab", ["Call it ab. The answer is 5", "ab, so 5"], "too short"),
        ("1200", [], "ungrounded"),
    ],
)
def test_an_ungrounded_target_is_dropped(target, teachers, why):
    assert ground_target(target, teachers, QUESTION) == (None, why)


def test_at_least_half_of_the_teacher_answers_ground_a_target():
    assert ground_target("1200", ["The answer is 1200", "The answer is 1100"], QUESTION)[0] is not None


# --- rule 3: checking an answer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "met"),
    [
        ("The answer is 1200.", True),
        ("So: $1,200.00", True),
        ("#### 1200.0", True),
        ("I first got 1200, but the answer is 1300.", False),  # a final-result target checks the final answer only
        ("<think>1200</think>The answer is 1300", False),
        ("<think>the answer is 1200", False),  # reasoning never closed: no final answer
        ("no idea", False),
    ],
)
def test_a_final_result_target_checks_the_extracted_final_answer(answer, met):
    target, _ = ground_target("1200", TEACHERS, QUESTION)
    assert meets_target(target, answer) is met


def test_an_intermediate_number_is_found_anywhere_in_the_final_text_numerically():
    assert numbers_in("5-3=2, x = -5, 1,200 and 1,2,3; 1200.0 \u22127") == ["5", "3", "2", "-5", "1,200", "1", "2", "3", "1200.0", "-7"]
    assert occurs_in("1200", "we get 1,200 apples then sell some: 900")
    assert occurs_in("1200", "1200.0 apples")
    assert not occurs_in("1.5", "105 apples")  # a target is literal text, never a pattern
    assert occurs_in("3", "5-3") and occurs_in("-3", "5 = 2 + -3")
    assert not occurs_in("-3", "5-3")  # a minus after a digit is subtraction


def test_an_intermediate_string_is_a_whole_phrase_after_normalising_case_and_whitespace():
    assert occurs_in("Blue  Whale", "the BLUE whale\nis large")
    assert not occurs_in("blue whale", "blue whales")
    assert occurs_in("Paris", "(paris)")


# --- score_verdicts: the one scoring path -------------------------------------------------------------------

RUBRIC = Rubric(
    criteria=[
        Criterion(id="c1", text="The final answer is 1200 apples", points=5, target="1200"),
        Criterion(id="c2", text="Explains the multiplication", points=2),
        Criterion(id="c3", text="Computes the total of 1,200", points=1, target="1100"),  # a student's value: ungrounded
        Criterion(id="c4", text="Gives the unit", points=2, target="<<<apples"),
    ]
)
ANSWERS = ["3 * 400 = 1200. The answer is 1200 apples.", "3 + 400 = 403. The answer is 403 apples."]
JUDGE_SAYS_ALL_MET = [[True] * 4, [True] * 4]


def only(**checks: bool) -> JudgeConfig:
    """The published judge settings (every code check off) with just `checks` set."""
    return JudgeConfig(**{**PUBLISHED_JUDGE, **checks})


def test_grounded_targets_decide_their_criteria_whatever_the_judge_said():
    scored = score_verdicts(RUBRIC, JUDGE_SAYS_ALL_MET, ANSWERS, TEACHERS, only(verifiable_criteria=True), QUESTION)
    assert scored.decided_by == ["target", "judge", "judge", "judge"]
    assert [row[0] for row in scored.met] == [True, False]  # the wrong answer loses the criterion the judge gave it
    assert scored.rewards == pytest.approx([1.0, 5 / 10])
    assert scored.dropped_targets == {"c3": "ungrounded", "c4": "unsafe"}
    judge_says_none = [[False] * 4, [False] * 4]
    assert score_verdicts(RUBRIC, judge_says_none, ANSWERS, TEACHERS, only(verifiable_criteria=True)).met[0][0] is True


def test_targets_are_ignored_unless_verifiable_criteria_is_on():
    scored = score_verdicts(RUBRIC, JUDGE_SAYS_ALL_MET, ANSWERS, TEACHERS, only(verifiable_criteria=False), QUESTION)
    assert scored.decided_by == ["judge"] * 4 and scored.rewards == [1.0, 1.0]


def test_the_consensus_criterion_is_appended_and_recorded():
    cfg = JudgeConfig(verifiable_criteria=True, consensus_criterion=True, consensus_points=3)
    scored = score_verdicts(RUBRIC, JUDGE_SAYS_ALL_MET, ANSWERS, TEACHERS, cfg, QUESTION)
    assert scored.decided_by == ["target", "judge", "judge", "judge", "consensus"] and scored.consensus == "1200"
    assert [row[-1] for row in scored.met] == [True, False]
    assert scored.rewards == pytest.approx([1.0, 5 / 13])


def evidence(expected: str, final: str, met: list[bool], label: int) -> Verdict:
    return Verdict(answer=label, met=met, expected=expected, final_answer=final)


def test_evidence_check_decides_the_criteria_naming_the_result_most_verdicts_copied():
    rubric = Rubric(criteria=[Criterion(id="c1", text="States 1,200 apples", points=3), Criterion(id="c2", text="Is clear", points=1)])
    verdicts = [
        evidence("1200", "1200 apples", [False, True], 1),  # the judge's boolean contradicts its own copies
        evidence("1200", "403", [True, True], 2),
        evidence("403", "403", [True, True], 3),  # a sycophantic copy is outvoted
    ]
    answers = ["a", "b", "c"]
    cfg = only(expected_evidence=True, evidence_check=True)
    scored = score_verdicts(rubric, verdicts, answers, [], cfg)
    assert scored.expected == "1200" and scored.decided_by == ["evidence", "judge"]
    assert scored.met == [[True, True], [False, True], [False, True]]
    off = score_verdicts(rubric, verdicts, answers, [], only(expected_evidence=True, evidence_check=False))
    assert off.met == [v.met for v in verdicts]
    split = [evidence("1200", "1200", [False, False], 1), evidence("403", "403", [True, True], 2)]
    assert score_verdicts(rubric, split, ["a", "b"], [], cfg).decided_by == ["judge", "judge"]  # no majority: no change


def test_a_grounded_target_outranks_the_evidence_check():
    rubric = Rubric(criteria=[Criterion(id="c1", text="The answer is 1200", points=1, target="1200")])
    verdicts = [evidence("1200", "1200", [True], 1), evidence("1200", "1200", [True], 2)]  # the judge misread answer 2
    cfg = only(expected_evidence=True, evidence_check=True, verifiable_criteria=True)
    scored = score_verdicts(rubric, verdicts, ANSWERS, TEACHERS, cfg, QUESTION)
    assert scored.decided_by == ["target"] and scored.rewards == [1.0, 0.0]


def test_evidence_check_without_expected_evidence_is_refused():
    with pytest.raises(ValueError, match="expected_evidence"):
        JudgeConfig(expected_evidence=False, evidence_check=True)
