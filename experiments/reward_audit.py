"""Audit what a rubric arm's reward paid for, from its committed per-group records (steps/*-groups.jsonl).

The bench's reward pairwise accuracy only compares right with wrong rollouts of a group, and is undefined for a group
with no right rollout, which on a hard task is most of them. This reads every group and reports what the reward did
with the rest: the mean reward of right, wrong (complete) and cut-off rollouts, the groups where every rollout was
wrong yet got the same top reward, and how often the judge said "yes" to a final-answer criterion for a rollout whose
final answer was wrong, once the criterion's target had been dropped because the teacher answers disagreed on it
(ropd's answer check is then left to the judge). It also reports how often the teacher answers themselves were right:
a rubric reward distils the teacher's answers, right or wrong. No model is called.

    .venv/bin/python experiments/reward_audit.py experiments/results/bench-cpu-pair

writes <bench>/reward_audit.json and reward_audit.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean


def mean_or_none(values: list[float]) -> float | None:
    return round(fmean(values), 3) if values else None


def audit_groups(groups: list[dict]) -> dict:
    """Reward by kind of rollout, and the judge's verdicts on final-answer criteria whose target was dropped."""
    right, wrong, cut = [], [], []
    all_wrong_all_top = ungrounded_groups = spread_groups = 0
    judge_answer_verdicts_on_wrong: list[bool] = []
    lengths = {"right": [], "wrong": [], "cut": []}
    scored = [g for g in groups if g.get("rewards")]
    for group in scored:
        rewards, correct, truncated = group["rewards"], group["correct"], group["truncated"]
        for reward, ok, cut_off, text in zip(rewards, correct, truncated, group["rollouts"], strict=True):
            kind = "cut" if cut_off else "right" if ok else "wrong"
            {"right": right, "wrong": wrong, "cut": cut}[kind].append(reward)
            lengths[kind].append(len(text))
        spread_groups += max(rewards) > min(rewards)
        if not any(correct) and min(rewards) == max(rewards) == 1.0:
            all_wrong_all_top += 1
        dropped = group.get("dropped_targets") or {}
        ungrounded_groups += any(reason == "ungrounded" for reason in dropped.values())
        for index, criterion in enumerate(group.get("rubric") or []):
            if criterion.get("id") not in dropped or group["decided_by"][index] != "judge":
                continue  # only final-answer criteria whose target was dropped and that the judge then decided
            for row, ok in enumerate(correct):
                if not ok and not truncated[row]:
                    judge_answer_verdicts_on_wrong.append(bool(group["verdicts"][row][index]))
    yes = judge_answer_verdicts_on_wrong
    teacher = [g["teacher_correct"] for g in scored if g.get("teacher_correct")]
    return {
        "groups": len(groups),
        "scored_groups": len(scored),
        "groups_with_reward_spread": spread_groups,
        "rollouts": {"right": len(right), "wrong": len(wrong), "cut_off": len(cut)},
        "mean_reward": {"right": mean_or_none(right), "wrong": mean_or_none(wrong), "cut_off": mean_or_none(cut)},
        "mean_characters": {kind: mean_or_none(values) for kind, values in lengths.items()},
        "all_wrong_groups_rewarded_1": all_wrong_all_top,
        "groups_with_an_ungrounded_answer_target": ungrounded_groups,
        "judge_yes_rate_on_wrong_answers_for_dropped_targets": mean_or_none([float(v) for v in yes]),
        "judge_verdicts_counted": len(yes),
        "teacher_answers_right": mean_or_none([float(ok) for answers in teacher for ok in answers]),
        "groups_where_most_teacher_answers_are_right": sum(sum(answers) > len(answers) / 2 for answers in teacher),
    }


def audit_bench(folder: Path) -> dict:
    runs = {}
    for path in sorted((folder / "steps").glob("*-groups.jsonl")):
        groups = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        runs[path.name.removesuffix("-groups.jsonl")] = audit_groups(groups)
    return runs


def markdown(runs: dict) -> str:
    lines = [
        "# What the rubric reward paid for",
        "",
        "From each rubric run's per-group records (`steps/*-groups.jsonl`); right and wrong by the prompt's reference "
        "answer, cut off = stopped at the completion limit. `experiments/reward_audit.py`.",
        "",
        "| run | groups (with spread) | rollouts right / wrong / cut off | mean reward right / wrong / cut off | "
        "all-wrong groups rewarded 1.0 | groups with an ungrounded answer target | judge 'yes' on wrong answers there | "
        "teacher answers right | groups where most teacher answers are right |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        n, m = r["rollouts"], r["mean_reward"]
        yes = r["judge_yes_rate_on_wrong_answers_for_dropped_targets"]
        lines.append(
            f"| {name} | {r['scored_groups']} ({r['groups_with_reward_spread']}) | {n['right']} / {n['wrong']} / {n['cut_off']} | "
            f"{m['right']} / {m['wrong']} / {m['cut_off']} | {r['all_wrong_groups_rewarded_1']} | "
            f"{r['groups_with_an_ungrounded_answer_target']} | "
            + ("–" if yes is None else f"{yes:.0%} of {r['judge_verdicts_counted']}")
            + " | "
            + ("–" if r["teacher_answers_right"] is None else f"{r['teacher_answers_right']:.0%}")
            + f" | {r['groups_where_most_teacher_answers_are_right']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path, help="a bench output folder with steps/*-groups.jsonl")
    args = parser.parse_args()
    runs = audit_bench(args.bench)
    if not runs:
        raise SystemExit(f"{args.bench}: no steps/*-groups.jsonl (a bench folder whose rubric runs have finished)")
    (args.bench / "reward_audit.json").write_text(json.dumps(runs, indent=1) + "\n")
    (args.bench / "reward_audit.md").write_text(markdown(runs))
    print(markdown(runs))


if __name__ == "__main__":
    main()
