"""Build a labelled judge-eval set over several tasks, from answers sampled from real models.

Per task: the prompts of a reasoning-gym spec, answers sampled from the generator models (the
student and the teacher), each labelled by the task's own checker, and teacher answers sampled from
the teacher model (not the reference solution). Items keep at least one right and one wrong answer.
The sets of all tasks are merged into one file that `ropd judge-eval --labelled FILE` reads.

Every sample is written to the SQLite cache the moment it arrives, so a killed build keeps what it
made and a rerun only samples the rest. Local models are served on loopback by llama.cpp.

    .venv/bin/python experiments/build_judge_set.py --config experiments/models-cpu.yaml \\
        --task "reasoning-gym:chain_sum?size=48&seed=7&min_terms=2&max_terms=3&min_digits=1&max_digits=2" \\
               "smollm2-135m:6,chain-sum-teacher:2" "chain-sum-teacher:3" \\
        --task "reasoning-gym:gsm_symbolic?size=40&seed=7" "smollm2-135m:2,qwen2.5-coder-1.5b:3" "qwen2.5-coder-1.5b:2" \\
        --max-answers 4 --out experiments/data/judge_eval_mixed.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ropd.config import load_config
from ropd.data import load_prompts
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.models import ropd_home
from ropd.evaluation.judge_eval import LabelledSet, Sampling, build_labelled_set, parse_model_counts, save_labelled_set


def merge(sets: list[LabelledSet]) -> LabelledSet:
    """One set holding every task's items; the provenance fields join the tasks' with ' + '."""
    return LabelledSet(
        dataset=" + ".join(s.dataset for s in sets),
        teacher=" + ".join(s.teacher for s in sets),
        generators=[g for s in sets for g in s.generators],
        examined=sum(s.examined for s in sets),
        dropped_no_correct=sum(s.dropped_no_correct for s in sets),
        dropped_no_incorrect=sum(s.dropped_no_incorrect for s in sets),
        items=[item for s in sets for item in s.items],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task",
        nargs=3,
        action="append",
        required=True,
        metavar=("DATASET", "GENERATORS", "TEACHER"),
        help="A reasoning-gym spec, its answer generators MODEL:K,..., and its teacher MODEL:K. Repeat per task.",
    )
    parser.add_argument("--config", help="A run config whose `models:` aliases are used (e.g. a trained teacher's folder).")
    parser.add_argument("--max-answers", type=int, default=4, help="Answers kept per item, right and wrong mixed.")
    parser.add_argument("--max-prompts", type=int, help="Use only the first N prompts of each task.")
    parser.add_argument("--max-tokens", type=int, default=256, help="Tokens per sampled answer.")
    parser.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature of every answer.")
    parser.add_argument("--cache", type=Path, default=ropd_home() / "judge_eval.sqlite", help="Where samples are cached.")
    parser.add_argument("--out", type=Path, required=True, help="The merged labelled set (JSON).")
    args = parser.parse_args()
    aliases = {
        name: alias.model_copy(update={"target": str(Path(alias.target).expanduser())}) if alias.kind == "hub" else alias
        for name, alias in (load_config(args.config).models if args.config else {}).items()
    }
    sampling = Sampling(temperature=args.temperature, max_tokens=args.max_tokens)
    sets = []
    with ResultCache(args.cache) as cache:
        for dataset, generators, teacher in args.task:
            started = time.perf_counter()
            rows = load_prompts(dataset, max_prompts=args.max_prompts)
            labelled = build_labelled_set(
                dataset,
                rows,
                parse_model_counts(generators, 2),
                parse_model_counts(teacher, 2)[0],
                cache,
                sampling=sampling,
                max_answers=args.max_answers,
                aliases=aliases,
            )
            print(
                f"{dataset}: {len(labelled.items)} items of {labelled.examined} prompts (dropped {labelled.dropped_no_correct} "
                f"without a right answer, {labelled.dropped_no_incorrect} without a wrong one) in {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            sets.append(labelled)
    merged = merge(sets)
    save_labelled_set(merged, args.out)
    right = sum(c.correct for item in merged.items for c in item.candidates)
    total = sum(len(item.candidates) for item in merged.items)
    print(f"{len(merged.items)} items, {total} answers ({right} right) -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
