"""Tool-integrated rollouts through `ropd train`: a tiny random student whose first turn calls the Python tool (scripted:
a random model never writes a well-formed call), TRL's tool loop running the real sandbox, then the model's own turn.

Checked: the tool output's tokens are masked out of the loss, SOD's steps are the assistant turns, the metrics count real
tool calls, and (rubric OPD) the rubricator and the judge see both trajectories, the student's and a tool-using teacher's
from a scripted OpenAI-compatible server, with the tool calls and outputs marked by lines carrying the prompt's code.
"""

import json
import re
import sqlite3

import pytest
import torch

from ropd.config import load_config
from ropd.endpoints.models import load_tokenizer
from ropd.testing.judge_scripts import blocks, is_judge_request, rubric_json, system_text, user_text
from ropd.testing.scripted_server import ScriptedServer
from ropd.testing.tool_scripts import python_call_text, scripted_first_turn, tool_call_body
from ropd.training.opd import SODTrainer
from ropd.training.run import train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STUDENT_CODE = "print(6 * 7 * 1000003)"
STUDENT_RESULT = str(6 * 7 * 1000003)  # 42000126: what the sandbox prints, never written by the model
TEACHER_CODE = "print(19 * 23 * 100003)"
TEACHER_RESULT = str(19 * 23 * 100003)


def base(out, **overrides):
    values = {
        "student.model": "tiny-random",
        "student.chat_template": "qwen2_5",
        "tools.names": ["python"],
        "tools.max_iterations": 1,
        "tools.python_timeout": 5,
        "data.dataset": "reasoning-gym:gsm_symbolic?size=2&seed=0",
        "training.max_steps": 1,
        "training.prompts_per_step": 1,
        "training.num_generations": 2,
        "training.max_completion_length": 80,
        "training.truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
        "training.learning_rate": 1e-3,
        "training.save_steps": 10,
        "output.dir": str(out),
        **overrides,
    }
    return load_config(overrides=values)


def metrics(out) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_sod_with_the_python_tool_masks_tool_output_and_steps_by_turn(tmp_path, monkeypatch):
    seen, steps = [], []
    shape, step_ids = SODTrainer._shape_advantages, SODTrainer._step_ids

    def capture_batch(self, output):
        shaped = shape(self, output)
        seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in shaped.items()})
        return shaped

    def capture_steps(self, output, mask):
        ids = step_ids(self, output, mask)
        steps.append(ids.clone())
        return ids

    monkeypatch.setattr(SODTrainer, "_shape_advantages", capture_batch)
    monkeypatch.setattr(SODTrainer, "_step_ids", capture_steps)
    config = base(tmp_path / "sod", **{"method.name": "sod", "method.sequence_reward": "outcome", "teacher.model": "tiny-random-teacher"})
    with scripted_first_turn(python_call_text(STUDENT_CODE)) as scripted:
        train(config)
    tokenizer = load_tokenizer("tiny-random")
    (batch,), (step,) = seen, steps
    first_turn = len(scripted[0])
    for row in range(batch["completion_ids"].size(0)):
        ids, tool_mask = batch["completion_ids"][row], batch["tool_mask"][row]
        counted = batch["completion_mask"][row].bool() & (tool_mask == 1)
        tool_output = batch["completion_mask"][row].bool() & (tool_mask == 0)
        assert STUDENT_RESULT in tokenizer.decode(ids[tool_output])  # the sandbox's output is in the sequence ...
        assert STUDENT_RESULT not in tokenizer.decode(ids[counted])  # ... and out of the loss
        assert "<tool_call>" in tokenizer.decode(ids[:first_turn])  # the call the model wrote counts
        assert (batch["advantages"][row][tool_mask == 0] == 0).all()
        assert (step[row, :first_turn] == 0).all()  # steps = turns: the turn that calls the tool is step 0,
        after = torch.nonzero(tool_mask == 0).max().item() + 1
        assert (step[row, after:][counted[after:]] == 1).all()  # the model's turn after the tool output is step 1
    record = metrics(tmp_path / "sod")
    assert record["tools/call_frequency"] == 1.0 and record["tools/failure_frequency"] == 0.0
    assert record["sod/steps_per_completion"] == 2.0
    assert 0 < record["sod/step_weight_min"] <= 1.2


def scripted_teacher_and_judge(requests: list[dict]):
    def handler(body):
        requests.append(body)
        text = user_text(body)
        if is_judge_request(body):
            answers = blocks(text, "ANSWER")
            verdicts = [{"answer": int(label), "final_answer": "1", "met": [STUDENT_RESULT in a, True]} for label, a in answers.items()]
            return json.dumps({"verdicts": verdicts})
        if "<<<BEGIN REFERENCE" in text:
            return rubric_json([("uses the computed product", 3), ("states a result", 1)])
        if body.get("tools") and not any(m.get("role") == "tool" for m in body["messages"]):
            return tool_call_body(TEACHER_CODE, content="Let me compute it.")
        return f"The product is {TEACHER_RESULT}."

    return handler


def test_ropd_judge_and_rubricator_see_both_trajectories_marked(tmp_path):
    requests: list[dict] = []
    with ScriptedServer(scripted_teacher_and_judge(requests)) as server:
        config = base(
            tmp_path / "ropd",
            **{
                "method.name": "ropd",
                "teacher.model": "scripted",
                "teacher.base_url": server.base_url,
                "teacher.num_answers": 1,
                "judge.max_retries": 0,
                "judge.chunk_size": None,
                "judge.expected_evidence": False,
                "judge.evidence_check": False,
                "judge.verifiable_criteria": False,
                "judge.consensus_criterion": False,
                "judge.min_criteria": 1,
            },
        )
        with scripted_first_turn(python_call_text(STUDENT_CODE)):
            train(config)
    teacher_calls = [b for b in requests if b.get("tools")]
    assert [t["function"]["name"] for t in teacher_calls[0]["tools"]] == ["python"]
    tool_reply = [m for m in teacher_calls[-1]["messages"] if m["role"] == "tool"]
    assert TEACHER_RESULT in tool_reply[0]["content"]  # the teacher's call ran in the sandbox and came back
    rubric = next(b for b in requests if "<<<BEGIN REFERENCE" in user_text(b))
    judge = next(b for b in requests if is_judge_request(b))
    for body in (rubric, judge):
        code = re.search(r"<<<BEGIN QUESTION (\w+)>>>", user_text(body)).group(1)
        assert f"[TOOL OUTPUT python {code}]" in user_text(body) and f"[END TOOL OUTPUT {code}]" in user_text(body)
        assert f"[TOOL CALL python {code}]" in user_text(body)
        assert f"[TOOL OUTPUT name {code}]" in system_text(body)  # the note explaining the markers
    assert TEACHER_CODE in user_text(rubric) and TEACHER_RESULT in user_text(rubric)
    assert STUDENT_CODE in user_text(judge) and STUDENT_RESULT in user_text(judge)
    (group,) = [json.loads(line) for line in (tmp_path / "ropd" / "groups.jsonl").read_text().splitlines()]
    assert f"[TOOL OUTPUT python]\n{STUDENT_RESULT}\n[END TOOL OUTPUT]" in group["rollouts"][0]  # readable in the report
    record = metrics(tmp_path / "ropd")
    assert record["tools/call_frequency"] == 1.0
    assert record["rubric/reward_mean"] == 1.0  # the judge saw the tool output in every rollout
    with sqlite3.connect(tmp_path / "ropd" / "cache.sqlite") as db:
        stored = [json.loads(v) for (v,) in db.execute("SELECT value FROM results WHERE role = 'teacher'")]
    assert stored[0]["tool_calls"] == 1 and [m["role"] for m in stored[0]["trajectory"]] == ["assistant", "tool", "assistant"]
