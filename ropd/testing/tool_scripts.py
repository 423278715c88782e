"""Test doubles for tool use: an OpenAI tool-call reply for the scripted server, and a student whose first turn is scripted.

* `tool_call_body(code)`: the chat-completion JSON of a reply that calls the Python tool (`ScriptedServer` handlers may
  return it as is), as an OpenAI-compatible server sends one.
* `scripted_first_turn(text)`: a context manager under which every GRPOTrainer's first generation of a step returns
  `text` (tokenized with the student's tokenizer) for every rollout; the turns after tool outputs are the model's own.
  A tiny random model never writes a well-formed tool call by chance, so tests script the call and let TRL's tool loop,
  the sandbox, masking, steps and rewards run for real.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from trl import GRPOTrainer

from ropd.testing.scripted_server import Reply, completion_body


def tool_call_body(code: str, *, content: str = "", model: str = "scripted", call_id: str = "call_1") -> dict[str, Any]:
    """A chat completion whose one choice calls the `python` tool with `code`."""
    call = {"id": call_id, "type": "function", "function": {"name": "python", "arguments": json.dumps({"code": code})}}
    body = completion_body(Reply(content, finish_reason="tool_calls"), model)
    body["choices"][0]["message"]["tool_calls"] = [call]
    return body


def python_call_text(code: str) -> str:
    """A tool call to `python` as a ChatML (Qwen2.5-style) assistant turn writes it."""
    return f"<tool_call>\n{json.dumps({'name': 'python', 'arguments': {'code': code}})}\n</tool_call><|im_end|>"


@contextlib.contextmanager
def scripted_first_turn(text: str) -> Iterator[list[list[int]]]:
    """Every GRPOTrainer's first-turn generation returns `text` for every rollout; yields the scripted token ids
    of each call (a list that fills as steps run)."""
    original = GRPOTrainer._generate_single_turn
    scripted: list[list[int]] = []

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if num_generations == 1:  # the tool loop's regeneration after a tool output: the model's own
            return original(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        ids = self.processing_class.encode(text, add_special_tokens=False)
        scripted.append(ids)
        # TRL repeats each prompt num_generations times before generating, so prompt_ids has one row per rollout
        return [list(ids) for _ in prompt_ids], None

    GRPOTrainer._generate_single_turn = generate
    try:
        yield scripted
    finally:
        GRPOTrainer._generate_single_turn = original


def digit_sum(number: int) -> int:
    """Add up the decimal digits of a whole number (an example of a user tool, `ropd.testing.tool_scripts:digit_sum`).

    Args:
        number: The whole number whose digits are added up.
    """
    return sum(int(d) for d in str(abs(int(number))))
