"""Bench uncertainty: bootstrap intervals over prompts and seeds, and paired differences between arms."""

import random

import pytest

from ropd.bench.stats import bootstrap_mean, paired_difference


def arm(seed_offsets: dict[int, float], prompts: int = 200, base: float = 0.3, rng_seed: int = 0) -> dict[int, list[float]]:
    """Per seed, per prompt 0/1 scores drawn around `base` + the seed's offset."""
    rng = random.Random(rng_seed)
    return {s: [float(rng.random() < base + off) for _ in range(prompts)] for s, off in seed_offsets.items()}


def test_the_interval_holds_the_mean_and_narrows_with_more_prompts():
    small = bootstrap_mean(arm({0: 0, 1: 0, 2: 0}, prompts=40))
    large = bootstrap_mean(arm({0: 0, 1: 0, 2: 0}, prompts=400))
    for interval in (small, large):
        assert interval.low < interval.mean < interval.high
    assert (large.high - large.low) < (small.high - small.low) / 2
    # at p=0.3 and 3 x 40 answers the standard error is about 4 points: a 95% interval near +-8 points
    assert 0.08 < small.high - small.low < 0.25
    assert (small.seeds, small.prompts, large.prompts) == (3, 40, 400)


def test_identical_arms_differ_by_exactly_zero():
    scores = arm({0: 0, 1: 0.05})
    diff = paired_difference(scores, scores)
    assert diff.mean == diff.low == diff.high == 0.0 and not diff.excludes_zero


def test_pairing_cancels_prompt_difficulty_that_both_arms_share():
    """Arm b is arm a with 10% of the prompts flipped to right: the paired interval sees it; separate intervals overlap."""
    rng = random.Random(1)
    hardness = [rng.random() for _ in range(200)]  # per prompt: shared by both arms
    a = {s: [float(h < 0.3) for h in hardness] for s in (0, 1, 2)}
    b = {s: [1.0 if (i + s) % 10 == 0 else x for i, x in enumerate(row)] for s, row in a.items()}
    diff = paired_difference(b, a)
    separate_a, separate_b = bootstrap_mean(a), bootstrap_mean(b)
    assert diff.excludes_zero and diff.low > 0.03
    assert separate_b.low < separate_a.high  # unpaired, the two intervals overlap
    assert diff.mean == pytest.approx(separate_b.mean - separate_a.mean)


def test_step0_has_one_row_that_pairs_with_every_seed():
    trained = arm({0: 0.2, 1: 0.2, 2: 0.2}, rng_seed=3)
    step0 = [0.0] * 200
    diff = paired_difference(trained, step0)
    assert diff.seeds == 3 and diff.excludes_zero and diff.mean == pytest.approx(bootstrap_mean(trained).mean)


def test_step0_pairs_with_an_arm_whose_only_finished_seed_is_not_seed_0():
    """`ropd bench --seeds 1` can finish seed 1 before seed 0: its difference from step 0 is still defined."""
    late = arm({1: 0.2}, rng_seed=4)
    diff = paired_difference(late, [0.0] * 200)
    assert diff.seeds == 1 and diff.mean == pytest.approx(bootstrap_mean(late).mean)


def test_an_arm_is_paired_with_another_arm_only_on_the_seeds_both_have():
    """Only step 0 (a plain row) is broadcast: an arm with one finished seed is not compared with other seeds' runs."""
    diff = paired_difference(arm({0: 0, 1: 0, 2: 0}), arm({0: 0}))
    assert diff.seeds == 1
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference(arm({1: 0}), arm({0: 0}))


def test_arms_on_different_prompts_or_seeds_are_refused():
    with pytest.raises(ValueError, match="different prompts"):
        paired_difference(arm({0: 0}, prompts=10), arm({0: 0}, prompts=12))
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference(arm({0: 0, 1: 0}), arm({2: 0, 3: 0}))
