"""Does wrapping the student in LoRA adapters change what the bench's evaluation measures? It should not: untrained
adapters add zero. Evaluates the first 50 validation prompts of the pair bench with the plain student and with the
same weights wrapped by peft (rank 16, every linear layer, train mode, as the bench's in-run evaluation sees it), and
writes both to experiments/results/bench-cpu-pair/lora_eval_check.json.

    taskset -c 0 .venv/bin/python experiments/lora_eval_check.py
"""

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from ropd.data import load_prompts
from ropd.endpoints.models import load_model, load_tokenizer
from ropd.evaluation.eval import evaluate

DATASET = "reasoning-gym:products?size=200&seed=2&min_terms=2&max_terms=2&min_digits=2&max_digits=2"
OUT = Path(__file__).resolve().parent / "results" / "bench-cpu-pair" / "lora_eval_check.json"


def main() -> None:
    torch.set_num_threads(1)
    rows = load_prompts(DATASET)[:50]
    tokenizer = load_tokenizer("qwen2.5-coder-0.5b")
    model = load_model("qwen2.5-coder-0.5b", "auto")
    plain = evaluate(model, tokenizer, rows, max_new_tokens=64, batch_size=50, progress=False)
    wrapped_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    wrapped_model.train()
    wrapped = evaluate(wrapped_model, tokenizer, rows, max_new_tokens=64, batch_size=50, progress=False)
    same = [a.completion == b.completion for a, b in zip(plain.records, wrapped.records, strict=True)]
    result = {
        "dataset": DATASET,
        "prompts": len(rows),
        "plain_accuracy": plain.accuracy,
        "lora_wrapped_accuracy": wrapped.accuracy,
        "identical_completions": sum(same),
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
