"""`ropd rubric`: induce one rubric, for scripts and for checking a rubricator by hand."""

from __future__ import annotations

import argparse
import asyncio

from ropd.cli.common import add_llm_call_flags, fail, judge_config, llm_client, load_request, print_json


def cmd_rubric(args: argparse.Namespace) -> int:
    """Induce one rubric from a question, teacher answers and student answers; print it as JSON."""
    from ropd.endpoints.llm import LLMError
    from ropd.reward.rubrics import RubricRequest, induce_rubric

    request = load_request(args.input, RubricRequest)
    cfg, aliases = judge_config(args, "rubric_template")
    client = llm_client(cfg, "rubricator", args.cache, aliases)
    try:
        rubric = asyncio.run(induce_rubric(client, request.question, request.teacher_answers, request.student_answers, cfg))
    except LLMError as exc:
        return fail(exc)
    print_json(rubric.model_dump(mode="json", exclude_none=True))
    return 0


def add_rubric(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rubric", help="Induce a rubric for one question (prints the rubric JSON).", description=cmd_rubric.__doc__)
    add_llm_call_flags(p, 'JSON file: {"question": str, "teacher_answers": [str], "student_answers": [str]}.')
    p.set_defaults(func=cmd_rubric)
