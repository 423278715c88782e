"""Make the tool demo's models: fine-tune the packaged SmolLM2-135M to call the Python tool on reasoning-gym `products`.

The packaged 135M wrote no tool call on its own in the samples tried, so the tool demo
(`experiments/tools_demo.py`) starts from two short fine-tunes on tool trajectories, rendered with TRL's qwen2_5 chat
template (the one the demo's runs give the student, which fits SmolLM2's <|im_start|>/<|im_end|> tokens):

  teacher   16 steps on examples that all call the tool: the question, `<tool_call>` with `print(a * b)`, the
            sandbox's real output, then "The answer is N." (a tool-using white-box teacher for opd and sod, and the
            served teacher of ropd)
  student   the same examples, 8 steps: it has seen the format but often answers at once ("The answer is ...", the
            way the examples' last turn starts), with a product a 135M model cannot compute, so calling the tool is
            what the outcome reward favours. `--call-rate` below 1 mixes in examples that answer at once; at 0.5 and
            0.8 (6 steps) the student never called the tool in the demo's first rollouts

Loss on the assistant turns only; the tool output is context, as in training. Examples come from generator seed 1000
(the demo trains on seed 0 and evaluates nothing else). Reuses `experiments/make_teacher.py`'s batching.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python experiments/make_tool_model.py --role teacher --steps 16 --batch-size 4 \
        --out ~/.cache/ropd/models/smollm2-135m-tools-teacher
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python experiments/make_tool_model.py --role student --steps 8 --batch-size 4 \
        --out ~/.cache/ropd/models/smollm2-135m-tools-student
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_teacher import batches, sft_step  # a sibling script, not a package

TASK, PARAMS = "products", {"min_digits": 5, "max_digits": 6}


def trajectory(entry: dict, call: bool, tools: list) -> list[dict]:
    """The chat of one example: with a call, the tool's real output from the sandbox, then the answer."""
    from ropd.tools.toolbox import ToolError

    a, b = entry["metadata"]["expression"].split(" * ")
    question = {"role": "user", "content": entry["question"]}
    if not call:
        return [question, {"role": "assistant", "content": f"The answer is {entry['answer']}."}]
    code = f"print({a} * {b})"
    try:
        output = tools[0](code).strip()
    except ToolError as exc:
        raise RuntimeError(f"the sandbox failed on {code!r}: {exc}") from None
    if output != entry["answer"]:
        raise RuntimeError(f"the sandbox printed {output} for {code}, the generator says {entry['answer']}")
    call_message = {"type": "function", "function": {"name": "python", "arguments": {"code": code}}}
    return [
        question,
        {"role": "assistant", "content": "", "tool_calls": [call_message]},
        {"role": "tool", "name": "python", "content": output},
        {"role": "assistant", "content": f"The answer is {output}."},
    ]


def encode(tokenizer, messages: list[dict], tools: list, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels: the assistant turns' tokens are learned, everything else is -100."""
    ids: list[int] = []
    labels: list[int] = []
    for k, message in enumerate(messages):
        assistant = message["role"] == "assistant"
        before = tokenizer.apply_chat_template(messages[:k], tools=tools, add_generation_prompt=assistant, tokenize=False) if k else ""
        after = tokenizer.apply_chat_template(messages[: k + 1], tools=tools, tokenize=False)
        if not after.startswith(before):
            raise RuntimeError("the chat template is not prefix-preserving; use one that is (qwen2_5)")
        piece = tokenizer(after[len(before) :], add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if assistant else [-100] * len(piece)
    return ids[:max_length], labels[:max_length]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["teacher", "student"], required=True, help="Which of the demo's models to make.")
    parser.add_argument("--out", required=True, help="Output folder.")
    parser.add_argument("--call-rate", type=float, default=1.0, help="Share of examples that call the tool (teacher: 1).")
    parser.add_argument("--size", type=int, default=256, help="Examples drawn from the generator (seed 1000).")
    parser.add_argument("--steps", type=int, default=24, help="Optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=8, help="Examples per step.")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (linear decay to 0).")
    args = parser.parse_args()

    import reasoning_gym

    from ropd.config import ToolsConfig
    from ropd.endpoints.models import load_model, load_tokenizer
    from ropd.tools.toolbox import build_toolbox, chat_template_text

    torch.manual_seed(1000)
    rng = random.Random(1000)
    tokenizer = load_tokenizer("smollm2-135m")
    tokenizer.chat_template = chat_template_text("qwen2_5")
    tools = list(build_toolbox(ToolsConfig(names=["python"])).functions)
    entries = reasoning_gym.create_dataset(TASK, size=args.size, seed=1000, **PARAMS)
    calls = [rng.random() < args.call_rate for _ in entries]
    encoded = [encode(tokenizer, trajectory(e, c, tools), tools, 1024) for e, c in zip(entries, calls, strict=True)]
    model = load_model("smollm2-135m", dtype="float32")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / args.steps))
    started, losses = time.monotonic(), []
    stream = (batch for _ in range(100) for batch in batches(encoded, args.batch_size, tokenizer.pad_token_id, rng))
    for step, (ids, labels, mask) in zip(range(1, args.steps + 1), stream, strict=False):
        losses.append(sft_step(model, optimizer, schedule, ids, labels, mask))
        print(f"step {step}/{args.steps} loss {losses[-1]:.3f} ({time.monotonic() - started:.0f}s)", flush=True)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = {
        "base": "smollm2-135m",
        "role": args.role,
        "data": f"reasoning-gym {TASK} {PARAMS}, size={args.size}, seed=1000; tool trajectories (qwen2_5 template)",
        "call_rate": args.call_rate,
        "examples_calling": sum(calls),
        "steps": len(losses),
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "first_loss": round(sum(losses[:3]) / max(1, len(losses[:3])), 4),
        "last_loss": round(sum(losses[-3:]) / max(1, len(losses[-3:])), 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "tool_model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card))


if __name__ == "__main__":
    main()
