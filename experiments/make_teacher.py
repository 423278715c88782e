"""Make the bench's white-box teacher: fine-tune the packaged SmolLM2-135M on worked solutions of a reasoning-gym task.

Logit OPD needs a teacher with the student's vocabulary, and the bench gives every arm the same
teacher, so this model also writes the rubric arm's teacher answers. It is trained on worked
solutions of the bench's task, drawn with a generator seed the bench's training and evaluation
prompts do not use. Loss on the assistant's tokens only. Tasks:

  chain_sum     sums like "38 - 69 - 67 =": the solution works left to right, one operation per
                step ("38 - 69 = -31. -31 - 67 = -98. The answer is -98."), built from the
                generator's expression and checked against its answer
  gsm_symbolic  GSM8K-style word problems: the chain of thought reasoning-gym stores in each
                entry's metadata (`answer_cot`, ending "#### <answer>")

    .venv/bin/python experiments/make_teacher.py --task chain_sum --params min_terms=2,max_terms=3,min_digits=1,max_digits=2 \
        --out ~/.cache/ropd/models/smollm2-135m-chain-sum-teacher

Writes the model, its tokenizer and `teacher_card.json` (data, seed, steps, loss, seconds) to --out.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch


def chain_sum_solution(expression: str, answer: str) -> str:
    """A left-to-right worked solution of "a + b - c", one operation per sentence, ending "The answer is N."."""
    tokens = expression.split()
    total, steps = int(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2], strict=True):
        new = total + int(term) if op == "+" else total - int(term)
        steps.append(f"{total} {op} {term} = {new}.")
        total = new
    if str(total) != answer:
        raise ValueError(f"worked solution of {expression!r} gives {total}, the generator says {answer}")
    return " ".join(steps) + f" The answer is {total}."


SOLUTIONS = {
    "chain_sum": lambda entry: chain_sum_solution(entry["metadata"]["expression"], entry["answer"]),
    "gsm_symbolic": lambda entry: entry["metadata"]["answer_cot"],
}


def sft_examples(task: str, size: int, seed: int, params: dict[str, int]) -> list[dict]:
    """(question, worked solution) pairs from a reasoning-gym generator."""
    import reasoning_gym

    data = reasoning_gym.create_dataset(task, size=size, seed=seed, **params)
    return [{"question": e["question"], "solution": SOLUTIONS[task](e)} for e in data]


def parse_params(text: str) -> dict[str, int]:
    """ "a=1,b=2" -> {"a": 1, "b": 2}: generator settings, the same as in the bench's dataset spec."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    return {key.strip(): int(value) for key, value in pairs}


def encode(tokenizer, example: dict, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the chat and labels that train on the assistant's answer only (-100 elsewhere)."""
    messages = [{"role": "user", "content": example["question"]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": example["solution"]}], tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
    return ids, labels[: len(ids)]


def batches(encoded: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int, rng: random.Random):
    order = list(range(len(encoded)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.tensor([r[0] + [pad_id] * (width - len(r[0])) for r in rows])
        labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
        mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])
        yield ids, labels, mask


def sft_step(model, optimizer, schedule, ids, labels, mask) -> float:
    """One optimizer step on a batch (gradient clipped at 1.0); its loss."""
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path.home() / ".cache/ropd/models/smollm2-135m-gsm-teacher"), help="Output folder.")
    parser.add_argument("--base", default="smollm2-135m", help="Model to fine-tune (alias or path).")
    parser.add_argument("--task", default="gsm_symbolic", choices=sorted(SOLUTIONS), help="reasoning-gym task whose solutions to learn.")
    parser.add_argument("--params", default="", help="Generator settings as k=v,k=v (integers), as in the bench's dataset spec.")
    parser.add_argument("--size", type=int, default=400, help="Training examples drawn from the generator.")
    parser.add_argument("--seed", type=int, default=1000, help="reasoning-gym generator seed (not the bench's train/eval seeds).")
    parser.add_argument("--epochs", type=int, default=1, help="Passes over the examples.")
    parser.add_argument("--batch-size", type=int, default=8, help="Examples per optimizer step.")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (linear decay to 0).")
    parser.add_argument("--max-length", type=int, default=384, help="Tokens per example at most.")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="Stop early after this much wall time.")
    parser.add_argument(
        "--max-steps", type=int, help="Stop early after this many optimizer steps (the schedule still spans every example)."
    )
    args = parser.parse_args()

    from ropd.endpoints.models import load_model, load_tokenizer

    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.base)
    model = load_model(args.base, dtype="float32")
    model.train()
    params = parse_params(args.params)
    encoded = [encode(tokenizer, e, args.max_length) for e in sft_examples(args.task, args.size, args.seed, params)]
    steps_total = args.epochs * -(-len(encoded) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps_total))
    rng, started, step, losses = random.Random(args.seed), time.monotonic(), 0, []
    stopped_early = False
    for _ in range(args.epochs):
        for ids, labels, mask in batches(encoded, args.batch_size, tokenizer.pad_token_id, rng):
            loss = sft_step(model, optimizer, schedule, ids, labels, mask)
            step += 1
            losses.append(loss)
            elapsed = time.monotonic() - started
            print(f"step {step}/{steps_total} loss {loss:.3f} ({elapsed:.0f}s)", flush=True)
            if elapsed > args.max_minutes * 60 or (args.max_steps is not None and step >= args.max_steps):
                stopped_early = True
                break
        if stopped_early:
            break
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = {
        "base": args.base,
        "data": f"reasoning-gym {args.task} ({args.params or 'default settings'}), size={args.size}, seed={args.seed}, "
        + ("metadata.answer_cot" if args.task == "gsm_symbolic" else "a left-to-right worked solution")
        + " as the assistant turn",
        "examples_seen": min(step * args.batch_size, len(encoded) * args.epochs),
        "steps": step,
        "planned_steps": steps_total,
        "stopped_early": stopped_early,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_length": args.max_length,
        "first_loss": round(sum(losses[:3]) / max(1, len(losses[:3])), 4),
        "last_loss": round(sum(losses[-3:]) / max(1, len(losses[-3:])), 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    previous = Path(args.base).expanduser() / "teacher_card.json"
    if previous.is_file():  # a second stage trained on top of an earlier one keeps its history
        card["previous_stage"] = json.loads(previous.read_text())
    (out / "teacher_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card))


if __name__ == "__main__":
    main()
