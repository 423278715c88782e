"""`ropd judge`: judge and score one group, for scripts and for checking a judge by hand."""

from __future__ import annotations

import argparse
import asyncio

from ropd.cli.common import add_llm_call_flags, fail, judge_config, llm_client, load_request, print_json
from ropd.flags import add_deprecated


def cmd_judge(args: argparse.Namespace) -> int:
    """Judge answers against a rubric and score them exactly as training does (ropd.reward.scoring: the judge's booleans plus
    the code checks the judge settings turn on); print, in input order, {"rewards": [...], "verdicts": [[...]]} (the
    booleans that count, one per criterion of the scored rubric), "judge_verdicts" (the judge's own booleans),
    "criteria" (ids of the scored rubric: a consensus criterion is appended when added) and "decided_by" (per criterion:
    judge, evidence, target or consensus)."""
    from ropd.endpoints.llm import LLMError
    from ropd.reward.judge import JudgeRequest
    from ropd.reward.scoring import score_group

    request = load_request(args.input, JudgeRequest)
    cfg, aliases = judge_config(args, "verifier_template")
    client = llm_client(cfg, "judge", args.cache, aliases)
    answers_only = cfg.model_copy(update={"score_teacher_answers": "off"})  # the teacher answers ground the checks only
    group = score_group(
        request.question, request.teacher_answers, request.answers, answers_only, None, client, seed=args.group, rubric=request.rubric
    )
    outcome = asyncio.run(group)
    if outcome.error is not None or outcome.scored is None:
        return fail(LLMError(outcome.error))
    scored = outcome.scored
    print_json(
        {
            "rewards": scored.rewards,
            "verdicts": scored.met,
            "judge_verdicts": [v.met for v in outcome.verdicts],
            "criteria": [c.id for c in scored.rubric.criteria],
            "decided_by": scored.decided_by,
        }
    )
    return 0


def add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="Judge answers against a rubric (prints rewards and verdicts).", description=cmd_judge.__doc__)
    add_llm_call_flags(
        p,
        'JSON file: {"question": str, "rubric": {"criteria": [...]}, "answers": [str], "teacher_answers": [str] (optional: they '
        "ground verifiable targets and give the consensus answer)}.",
    )
    p.add_argument(
        "--group",
        default="0",
        metavar="PROMPT_ID:STEP",
        help="Key of the answers' shuffle: training shuffles a group's answers by PROMPT_ID:STEP, so one reproduces that group's order "
        "(e.g. gsm-3:12; default: 0).",
    )
    add_deprecated(p, "--seed", "--group")  # --seed is an integer everywhere else
    p.set_defaults(func=cmd_judge)
