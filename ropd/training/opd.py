"""White-box distillation: logit OPD (per-token reverse KL) and SOD (step-weighted teacher signal).

Both need a local teacher with the student's vocabulary (`check_same_vocabulary`); `--method ropd`
works with any teacher because it learns from text only.

Design: one code path. `TeacherTrainer` is a `trl.GRPOTrainer` that also holds a frozen teacher on
the student's device; it keeps GRPO's on-policy generation (transformers or vLLM, tools), reward
functions, logging and checkpointing, so opd, sod and ropd runs share one config (`GRPOConfig`) and
one set of log keys (`reward`, `completions/*`, ...). Two small subclasses differ only where the
methods differ:

- `OPDTrainer` replaces the policy-gradient loss with the full-vocabulary reverse KL
  sum_v p_s(v) (log p_s(v) - log p_t(v)) per completion token, token-mean over the batch; the
  gradient flows through the student's whole next-token distribution. Rewards are computed and
  logged for comparison only; they do not enter the loss.
- `SODTrainer` keeps GRPO's clipped loss and reshapes the advantage per token:
  A_t = A_seq + c * w_k(t) * s_t with s_t = log p_teacher(y_t) - log p_student_old(y_t) on the
  sampled token and w_k the step weight (see `step_weights`); both terms are detached.

Why not TRL's `DistillationTrainer` (beta=1.0 is reverse KL to a local teacher, on-policy, with a
chunked kernel that never materialises the logits)? It is a separate trainer with its own config
class and no reward functions, so SOD (which needs GRPO's rewards, advantages and clipped loss)
could not share it, and opd runs would log no reward to compare with ropd and sod. The price here:
`OPDTrainer` materialises the student's and the teacher's completion logits, [batch, completion,
vocab] each; lower `per_device_train_batch_size` if that does not fit.

A served teacher (`teacher.base_url`, `ropd.training.teacher_logprobs`): a teacher too large to share the
student's GPU runs behind a server that returns the log-probabilities of given tokens (vLLM's
prompt_logprobs). A server returns no full distribution, so both methods use the sampled token's
signal s_t = log p_teacher(y_t) - log p_student_old(y_t): `SODTrainer` as above, and for opd
`SampledOPDTrainer`, GRPO's clipped loss with A_t = s_t, the sampled-token reverse KL that
server-based on-policy distillation uses (its gradient estimates that of the full reverse KL).
The full-vocabulary OPD loss needs the teacher loaded beside the student.

Empty signal (see `ropd.training.trainers.TimedGRPOTrainer`): a micro-batch whose loss has no gradient skips its forward
and backward, and an optimizer step all of whose micro-batches were skipped leaves the weights byte-identical.
For opd that happens only when no completion token is counted (reward ties do not matter: the reverse KL is the
signal); for sod only when no reward spread and no teacher term (sod_coef = 0) remain.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from trl import GRPOConfig
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import add_fused_lm_head

from ropd.config import MethodConfig
from ropd.training.teacher_logprobs import check_temperature
from ropd.training.trainers import TimedGRPOTrainer

WHITE_BOX_METHODS = ("opd", "sod")


class VocabularyMismatchError(ValueError):
    """Teacher and student tokenizers differ, so their logits cannot be compared token by token."""


# --- vocabulary ------------------------------------------------------------------------------------


def vocabulary_fingerprint(tokenizer) -> str:
    """A hash of the token -> id mapping (added tokens included)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def check_same_vocabulary(student_tokenizer, teacher_tokenizer, teacher_name: str) -> None:
    """Raise VocabularyMismatchError unless both tokenizers map the same tokens to the same ids."""
    student_size, teacher_size = len(student_tokenizer), len(teacher_tokenizer)
    if student_size != teacher_size:
        detail = f"{teacher_size} tokens vs the student's {student_size}"
    elif vocabulary_fingerprint(student_tokenizer) != vocabulary_fingerprint(teacher_tokenizer):
        detail = f"both have {student_size} tokens, but the token -> id mappings differ"
    else:
        return
    raise VocabularyMismatchError(
        f"teacher '{teacher_name}' has a different vocabulary from the student ({detail}). "
        "Logit distillation (--method opd or sod) compares the two models' probabilities token id by token id, "
        "so it needs the same tokenizer. Use --method ropd, which learns from the teacher's text and works with any tokenizer."
    )


# --- OPD: per-token reverse KL ---------------------------------------------------------------------


def reverse_kl_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_student || p_teacher) over the last (vocabulary) axis, in float32: sum_v p_s (log p_s - log p_t)."""
    student_logps = F.log_softmax(student_logits.float(), dim=-1)
    teacher_logps = F.log_softmax(teacher_logits.float(), dim=-1)
    return (student_logps.exp() * (student_logps - teacher_logps)).sum(dim=-1)


# --- SOD: steps, step weights, advantages ----------------------------------------------------------


def step_ids_from_turns(mask: torch.Tensor) -> torch.Tensor:
    """Step index per token: each maximal run of assistant tokens (mask 1) between tool outputs (mask 0) is a step.

    mask: [batch, seq] of 0/1 (completion mask times tool mask). Masked tokens get step 0.
    """
    valid = mask.bool()
    previous = F.pad(valid[:, :-1], (1, 0), value=False)
    seen_before = (valid.long().cumsum(dim=1) - valid.long()) > 0
    starts = valid & ~previous & seen_before
    return starts.long().cumsum(dim=1) * valid


def step_ids_from_delimiter(completion_ids: torch.Tensor, mask: torch.Tensor, tokenizer, delimiter: str = "\n\n") -> torch.Tensor:
    """Step index per token for single-turn answers: steps are text spans separated by runs of `delimiter`.

    The token holding the end of a delimiter run closes its step; the next token opens a new one. For a
    whitespace delimiter the run takes further characters of the delimiter too (three newlines make one break
    with the default). A delimiter split across tokens is found as well (the search runs on the joined token
    texts); one at the very start opens no step. Masked tokens get step 0.
    """
    if not delimiter:
        raise ValueError("the SOD step delimiter must not be empty")
    valid = mask.bool()
    unique_ids, inverse = torch.unique(completion_ids.cpu(), return_inverse=True)
    texts = np.array(
        tokenizer.batch_decode(unique_ids[:, None].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False), dtype=object
    )
    pieces = texts[inverse.numpy()]
    pieces[~valid.cpu().numpy()] = ""
    ends = np.cumsum(np.vectorize(len, otypes=[np.int64])(pieces), axis=1)
    trailing = f"[{re.escape(''.join(sorted(set(delimiter))))}]*" if delimiter.isspace() else ""
    pattern = re.compile(f"(?:{re.escape(delimiter)})+{trailing}")
    starts = torch.zeros(completion_ids.shape, dtype=torch.bool)
    for row in range(completion_ids.size(0)):
        closing = [m.end() - 1 for m in pattern.finditer("".join(pieces[row])) if m.start() > 0]
        if closing:
            next_token = np.searchsorted(ends[row], np.array(closing), side="right") + 1
            next_token = next_token[next_token < completion_ids.size(1)]
            starts[row, torch.from_numpy(next_token)] = True
    starts = starts.to(mask.device) & valid
    return starts.long().cumsum(dim=1) * valid


def step_weights(
    signal: torch.Tensor, step_ids: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6, delta: float = 0.2
) -> dict[str, torch.Tensor]:
    """SOD step weights: d_k = mean |s_t| over step k, w_1 = 1, w_k = min((d_1 + eps) / (d_k + eps), 1 + delta).

    signal, step_ids, mask: [batch, seq]. Returns `token_weight` [batch, seq] (0 on masked tokens), and per step
    `drift` (d_k), `weight` (w_k) and `exists` [batch, num_steps] (False for steps a row does not have).
    """
    valid = mask.bool()
    batch = signal.size(0)
    num_steps = int(step_ids[valid].max().item()) + 1 if valid.any() else 1
    flat = (torch.arange(batch, device=signal.device)[:, None] * num_steps + step_ids)[valid]
    totals = torch.zeros(batch * num_steps, dtype=torch.float32, device=signal.device)
    totals.index_add_(0, flat, signal[valid].abs().float())
    counts = torch.zeros_like(totals).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    drift = (totals / counts.clamp(min=1)).view(batch, num_steps)
    exists = (counts > 0).view(batch, num_steps)
    weight = ((drift[:, :1] + eps) / (drift + eps)).clamp(max=1 + delta)
    weight[:, 0] = 1.0
    weight = torch.where(exists, weight, torch.zeros_like(weight))
    token_weight = weight.gather(1, step_ids) * valid
    return {"token_weight": token_weight, "drift": drift, "weight": weight, "exists": exists}


def sod_advantages(
    sequence_advantages: torch.Tensor, signal: torch.Tensor, token_weight: torch.Tensor, mask: torch.Tensor, coef: float = 1.0
) -> torch.Tensor:
    """Per-token advantage A_t = A_seq + c * w_k(t) * s_t, detached, 0 on masked tokens. Shapes: [batch], [batch, seq]."""
    advantages = sequence_advantages.detach()[:, None] + coef * token_weight.detach() * signal.detach()
    return advantages * mask


# --- trainers --------------------------------------------------------------------------------------


class TeacherTrainer(TimedGRPOTrainer):
    """GRPOTrainer with a frozen white-box teacher (same vocabulary): loaded on the student's device (`teacher_model`),
    or behind a server that scores given tokens (`teacher_logprobs`, a ServedTeacherLogprobs).

    The teacher's forward passes (or requests) are timed into the step's metrics as time/teacher_logits.
    """

    def __init__(self, *args: Any, teacher_model=None, teacher_logprobs=None, method_config: MethodConfig | None = None, **kwargs: Any):
        if (teacher_model is None) == (teacher_logprobs is None):
            raise ValueError("give exactly one of teacher_model (loaded) and teacher_logprobs (served)")
        super().__init__(*args, **kwargs)
        self.method_config = method_config or MethodConfig()
        self.teacher_logprobs = teacher_logprobs
        self.teacher_model = None
        if teacher_model is None:
            return
        self.shared_vocab_size = self._shared_vocab_size(teacher_model)
        teacher_model.eval()
        teacher_model.requires_grad_(False)
        add_fused_lm_head(teacher_model, temperature=self.temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        self.teacher_model = self._prepare_frozen(teacher_model)

    def _shared_vocab_size(self, teacher_model) -> int:
        """Logit width both models share: their vocab sizes if equal, else the tokenizer's (extra rows are padding)."""
        student_size = self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
        teacher_size = teacher_model.config.get_text_config().vocab_size
        if student_size == teacher_size:
            return student_size
        tokenizer_size = len(self._tokenizer)
        if tokenizer_size > min(student_size, teacher_size):
            name = getattr(teacher_model.config, "_name_or_path", "teacher")
            raise VocabularyMismatchError(
                f"teacher '{name}' has {teacher_size} output logits and the student {student_size}, fewer than the tokenizer's "
                f"{tokenizer_size} tokens; they cannot share a vocabulary. Use --method ropd, which works with any tokenizer."
            )
        return tokenizer_size

    def _prepare_frozen(self, teacher_model):
        from trl.models import prepare_deepspeed, prepare_fsdp

        if self.is_deepspeed_enabled:
            return prepare_deepspeed(teacher_model, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(teacher_model, self.accelerator)
        return self.accelerator.prepare_model(teacher_model, evaluation_mode=True)

    def _timed_teacher(self):
        return self._timed("time/teacher_logits", "train" if self.model.training else "eval")

    def _teacher_token_logps(self, output: dict[str, Any], prompt_completion_ids, attention_mask, keep: int, batch_size: int):
        """The teacher's log-probability of every completion token, [batch, completion] (0 where the mask is 0)."""
        if self.teacher_model is not None:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.teacher_model, prompt_completion_ids, attention_mask, keep, batch_size=batch_size
            )
            return logps
        prompts, completions = output["prompt_ids"], output["completion_ids"]
        prompt_mask, completion_mask = output["prompt_mask"].bool(), output["completion_mask"].bool()
        sequences, prompt_lengths = [], []
        for row in range(completions.size(0)):
            prompt = prompts[row][prompt_mask[row]].tolist()
            sequences.append(prompt + completions[row][completion_mask[row]].tolist())
            prompt_lengths.append(len(prompt))
        values = self.teacher_logprobs.sampled_logprobs(sequences, prompt_lengths)
        logps = torch.zeros(completions.shape, dtype=torch.float32, device=completions.device)
        for row, row_values in enumerate(values):
            positions = completion_mask[row].nonzero().squeeze(1)
            logps[row, positions] = torch.tensor(row_values, dtype=torch.float32, device=completions.device).clamp(min=-1e4)
        return logps

    def _record(self, name: str, total: torch.Tensor, count: torch.Tensor) -> None:
        """Append a batch mean (summed over processes) to the trainer's metrics."""
        sums = self.accelerator.gather(torch.stack([total.float(), count.float()]).detach().reshape(1, 2)).sum(dim=0)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][name].append((sums[0] / sums[1].clamp(min=1)).item())


class OPDTrainer(TeacherTrainer):
    """On-policy distillation: token-mean full-vocabulary reverse KL to the teacher on the student's own samples.

    Every completion token carries the teacher's signal, whatever the rewards: a micro-batch is empty (no forward,
    no backward) only when it has no completion token the loss counts.
    """

    def _row_signal(self, inputs: dict[str, Any]) -> torch.Tensor:
        return self._loss_mask(inputs).bool().any(dim=1)

    def _compute_loss(self, model, inputs):
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        keep = inputs["completion_ids"].size(1) + 1
        mask = self._loss_mask(inputs).bool()
        with self.accelerator.autocast():
            student_logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False).logits
        with torch.no_grad(), self._timed_teacher():
            teacher_logits = self.teacher_model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False
            ).logits
        vocab = self.shared_vocab_size
        student_logits = student_logits[:, :-1, :vocab][mask] / self.temperature
        teacher_logits = teacher_logits[:, :-1, :vocab][mask].to(student_logits.device) / self.temperature
        kl = reverse_kl_per_token(student_logits, teacher_logits)
        self._record("opd/reverse_kl", kl.detach().sum(), mask.sum())
        return kl.sum() / self._token_normalizer(inputs)

    def _token_normalizer(self, inputs) -> torch.Tensor:
        """Completion tokens per micro-batch's share of the generation batch, as TRL's token-mean ("dapo") loss uses."""
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return normalizer


class SODTrainer(TeacherTrainer):
    """Step-wise on-policy distillation: GRPO's clipped loss on A_t = A_seq + c * w_k(t) * (log p_T - log p_old)(y_t).

    The teacher term is a signal of its own: a micro-batch is empty (no forward, no backward) only when A_t is 0 on
    every counted token, i.e. its groups have no reward spread and the teacher term vanishes (sod_coef = 0).
    """

    def _shape_advantages(self, output: dict[str, Any]) -> dict[str, Any]:
        """A_t = A_seq + c * w_k(t) * s_t, after groups without reward spread got A_seq = 0."""
        prompt_completion_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        keep = output["completion_ids"].size(1)
        batch_size = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        with torch.no_grad():
            if output.get("old_per_token_logps") is None:
                with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                    old_logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, prompt_completion_ids, attention_mask, keep, batch_size=batch_size
                    )
                output["old_per_token_logps"] = old_logps
            with self._timed_teacher():
                teacher_logps = self._teacher_token_logps(output, prompt_completion_ids, attention_mask, keep, batch_size)
        mask = self._loss_mask(output).float()
        signal = (teacher_logps.float() - output["old_per_token_logps"].float()) * mask
        return self._advantages_from_signal(output, signal, mask)

    def _advantages_from_signal(self, output: dict[str, Any], signal: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        step_ids = self._step_ids(output, mask)
        config = self.method_config
        weights = step_weights(signal, step_ids, mask, eps=config.sod_eps, delta=config.sod_delta)
        output["advantages"] = sod_advantages(output["advantages"], signal, weights["token_weight"], mask, coef=config.sod_coef)
        self._record_sod(signal, mask, weights)
        return output

    def _step_ids(self, output, mask: torch.Tensor) -> torch.Tensor:
        """Steps as `method_config.sod_steps` says: assistant turns between tool outputs, or delimited text spans."""
        steps = self.method_config.sod_steps
        if steps == "turns" or (steps == "auto" and "tool_mask" in output):
            return step_ids_from_turns(mask)
        return step_ids_from_delimiter(output["completion_ids"], mask, self._tokenizer, self.method_config.sod_delimiter)

    def _record_sod(self, signal: torch.Tensor, mask: torch.Tensor, weights: dict[str, torch.Tensor]) -> None:
        exists = weights["exists"]
        step_w = weights["weight"][exists]
        self._record("sod/signal_mean", signal.sum(), mask.sum())
        self._record("sod/abs_signal_mean", signal.abs().sum(), mask.sum())
        self._record("sod/step_weight_mean", step_w.sum(), step_w.new_tensor(step_w.numel()))
        self._record("sod/frac_steps_downweighted", (step_w < 1).sum(), step_w.new_tensor(step_w.numel()))
        rows = exists.any(dim=1)
        self._record("sod/steps_per_completion", exists.sum(), rows.sum())
        local_min = step_w.min() if step_w.numel() else torch.tensor(float("inf"), device=signal.device)
        global_min = self.accelerator.gather(local_min.reshape(1)).min()
        mode = "train" if self.model.training else "eval"
        if torch.isfinite(global_min):
            self._metrics[mode]["sod/step_weight_min"].append(global_min.item())


class SampledOPDTrainer(SODTrainer):
    """opd with a served teacher: GRPO's clipped loss on A_t = s_t = log p_T(y_t) - log p_old(y_t), the sampled-token
    reverse KL (a server gives no full distribution). Sequence rewards are logged only; `opd/reverse_kl` is the
    sampled estimate, mean of -s_t over counted tokens."""

    def _advantages_from_signal(self, output: dict[str, Any], signal: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        output["advantages"] = (signal * mask).detach()
        self._record("opd/reverse_kl", -signal.sum(), mask.sum())
        return output


# --- factory ---------------------------------------------------------------------------------------


def opd_no_reward(completions: Sequence[Any], **_: Any) -> list[float]:
    """Reward for opd runs given no reward function: opd trains on the KL alone, so a constant 0 changes nothing."""
    return [0.0] * len(completions)


def build_white_box_trainer(
    method: str,
    *,
    model,
    teacher_model=None,
    teacher_logprobs=None,
    processing_class,
    args: GRPOConfig,
    train_dataset,
    reward_funcs: Callable | list[Callable] | None,
    method_config: MethodConfig,
    teacher_processing_class=None,
    **trainer_kwargs: Any,
) -> TeacherTrainer:
    """An OPDTrainer or SODTrainer for `method` ("opd" or "sod").

    `args` is the GRPOConfig the run uses for every method. `reward_funcs` gives sod its sequence advantage (rubric or
    outcome reward); for opd rewards are logged only and may be empty. Pass `teacher_processing_class` to check the
    vocabularies here; extra keyword arguments (callbacks, eval_dataset, peft_config, tools) go to GRPOTrainer.
    A served teacher (`teacher_logprobs` instead of `teacher_model`) gives opd the sampled-token loss (SampledOPDTrainer);
    its log-probabilities are at temperature 1, so it needs `args.temperature` 1 (TeacherLogprobsError otherwise).
    """
    if method not in WHITE_BOX_METHODS:
        raise ValueError(f"white-box method must be one of {', '.join(WHITE_BOX_METHODS)}, got '{method}'")
    if teacher_processing_class is not None:
        name = getattr(teacher_model.config, "_name_or_path", "teacher") if teacher_model is not None else teacher_logprobs.model
        check_same_vocabulary(processing_class, teacher_processing_class, name)
    if teacher_logprobs is not None:
        check_temperature(args.temperature)
    if not reward_funcs:
        if method == "sod":
            raise ValueError("sod needs a reward function for its sequence advantage (rubric, or outcome when the data has answers)")
        reward_funcs = [opd_no_reward]
    trainer_class = SODTrainer if method == "sod" else OPDTrainer if teacher_model is not None else SampledOPDTrainer
    return trainer_class(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=processing_class,
        teacher_model=teacher_model,
        teacher_logprobs=teacher_logprobs,
        method_config=method_config,
        **trainer_kwargs,
    )
