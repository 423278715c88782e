"""Choose the task of the 0.5B/1.5B bench: measure step-0 accuracy of student and teacher on candidate tasks.

The bench needs a task where the teacher beats the student by at least 20 points and the student is right on at
least 10% (below that, a group of 8 rollouts is often all wrong and gives no signal). Each candidate is measured on
the same held-out prompts (generator seed 1) for both models, greedy, with the bench's own evaluator and each task's
own checker; the result (with a 95% bootstrap interval of the gap) goes to experiments/results/bench-cpu-pair/.

    .venv/bin/python experiments/pair_tasks.py --prompts 40 --max-new-tokens 160
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ropd.bench.stats import paired_difference
from ropd.data import load_prompts
from ropd.endpoints.models import load_model, load_tokenizer
from ropd.evaluation.eval import evaluate

CANDIDATES = {
    "chain_sum": "min_terms=3&max_terms=4&min_digits=2&max_digits=3",
    "basic_arithmetic": "min_terms=3&max_terms=4&min_digits=2&max_digits=2",
    "leg_counting": "min_animals=2&max_animals=3",
    "products": "min_terms=2&max_terms=2&min_digits=2&max_digits=2",
    "gsm_symbolic": "",
    "decimal_chain_sum": "min_terms=2&max_terms=3&min_digits=1&max_digits=2",
}
OUT = Path("experiments/results/bench-cpu-pair")


def spec(task: str, query: str, size: int) -> str:
    extra = f"&{query}" if query else ""
    return f"reasoning-gym:{task}?size={size}&seed=1{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="qwen2.5-coder-0.5b")
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    parser.add_argument("--prompts", type=int, default=40, help="held-out prompts per task")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--tasks", default=",".join(CANDIDATES), help="comma-separated candidates (teacher: only where the student has >= 10%%)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    path = args.out / "tasks.json"
    results: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}  # measured earlier: kept, not redone
    for role, name in (("student", args.student), ("teacher", args.teacher)):
        todo = [task for task in tasks if results.get(task, {}).get(role, {}).get("model") != name]
        if role == "teacher":  # a task the student cannot start on is out whatever the teacher does
            todo = [task for task in todo if results[task]["student"]["accuracy"] >= 0.10]
        if not todo:
            continue
        model, tokenizer = load_model(name, dtype="float32"), load_tokenizer(name)
        for task in todo:
            data = spec(task, CANDIDATES[task], args.prompts)
            prompts = load_prompts(data)
            start = time.perf_counter()
            result = evaluate(
                model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, model_name=name, dataset=data
            )
            entry = results.setdefault(task, {"dataset": data})
            entry[role] = {
                "model": name,
                "accuracy": result.accuracy,
                "truncated": result.truncated,
                "mean_completion_tokens": result.mean_completion_tokens,
                "seconds": round(time.perf_counter() - start, 1),
                "correct": [r.correct for r in result.records],
                "example": result.records[0].completion[:400],
            }
            print(f"{role} {name} {task}: {100 * result.accuracy:.1f}% ({result.truncated:.0%} cut off)", flush=True)
            path.write_text(json.dumps(results, indent=1) + "\n")
        del model
    write_table(results, args)


def write_table(results: dict[str, dict], args: argparse.Namespace) -> None:
    lines = [
        f"# Candidate tasks for the {args.student} (student) / {args.teacher} (teacher) bench",
        "",
        f"Step-0 accuracy, greedy, {args.prompts} held-out prompts (generator seed 1) per task, at most "
        f"{args.max_new_tokens} new tokens, each task's own checker. Gap: teacher - student with a paired 95% "
        "bootstrap interval over prompts. Wanted: gap >= 20 points and student >= 10%.",
        "",
        "| task | student | teacher | gap [95% CI] | student cut off | teacher cut off | fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, entry in results.items():
        if "student" not in entry:
            continue
        s, t = entry["student"], entry.get("teacher")
        if t is None:  # the teacher is measured only where the student qualifies
            reason = "student below 10%" if s["accuracy"] < 0.10 else "teacher not measured"
            lines.append(f"| {task} | {100 * s['accuracy']:.1f}% | not measured | | {s['truncated']:.0%} | | no ({reason}) |")
            continue
        interval = paired_difference({0: t["correct"]}, {0: s["correct"]})  # one seed, paired over the same prompts
        gap, low, high = 100 * interval.mean, 100 * interval.low, 100 * interval.high
        fits = "yes" if gap >= 20 and s["accuracy"] >= 0.10 else "no"
        lines.append(
            f"| {task} | {100 * s['accuracy']:.1f}% | {100 * t['accuracy']:.1f}% | {gap:+.1f} [{low:+.1f}, {high:+.1f}] "
            f"| {s['truncated']:.0%} | {t['truncated']:.0%} | {fits} |"
        )
    command = f"experiments/pair_tasks.py --prompts {args.prompts} --max-new-tokens {args.max_new_tokens} --tasks {','.join(results)}"
    lines += ["", f"Command: `.venv/bin/python {command}`", ""]
    (args.out / "tasks.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
