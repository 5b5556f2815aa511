"""The precision rules the trainers need beyond `helpers.devices`: fp32 adapters below compute capability 8.0, and a
guard that stops on the first non-finite logits or loss with one sentence saying what to do.

Where they are called:
- `keep_trainable_in_fp32(trainer.model, plan)` right after an SFTTrainer or GRPOTrainer is built on a 4-bit
  model: TRL casts the trainable (LoRA) parameters of quantized models to bf16 in its constructor on every GPU,
  which a T4 only emulates and which fp16 autocast with a gradient scaler does not expect;
- `FiniteLossCallback(plan)` in every trainer's callbacks (`trainer.add_callback(...)`): the first logged loss
  that is NaN or infinite stops training instead of producing a model that writes "!!!!";
- `require_finite_logits(model, tokenizer, plan)` after a model is loaded for training or evaluation: one
  forward pass that fails fast where a model overflows in the plan's dtype (Qwen2.5 in fp16 on a T4).

The fallback for a small model that overflows in fp16 is fp32 throughout: `HELPERS_PRECISION=fp32`
(`helpers.devices`), about twice the memory of fp16, which a model up to about 1B parameters has on a T4.
"""
from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

from helpers.devices import PRECISION_VARIABLE, DevicePlan

PROBE_TEXT = "Send $12.50 to Ann for lunch, then show my balance."


class NonFiniteError(RuntimeError):
    """Logits or a loss became NaN or infinite; the message says where and what to do."""


def keep_trainable_in_fp32(model, plan: DevicePlan) -> int:
    """Cast trainable parameters back to fp32 on GPUs without native bf16 (fp16 autocast); returns how many were
    cast. On bf16 GPUs TRL's bf16 adapters are the QLoRA paper's recipe and stay as they are."""
    if not plan.fp16:
        return 0
    cast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
            cast += 1
    return cast


def non_finite_message(what: str, value, plan: DevicePlan, step: int | None = None) -> str:
    where = f" at step {step}" if step is not None else ""
    if plan.fp16:
        return (f"The {what} is {value}{where} in fp16 on {plan.gpu_name}: this model overflows in fp16 (Qwen2.5 "
                f"does), so rerun with {PRECISION_VARIABLE}=fp32 in the environment (about twice the memory, which a "
                f"model up to about 1B parameters has on a T4) or use a GPU with bf16 (compute capability 8.0+).")
    return (f"The {what} is {value}{where} with weights in {plan.vllm_dtype} on {plan.gpu_name or 'the CPU'}: lower "
            f"the learning rate, check the training records, or rerun with {PRECISION_VARIABLE}=fp32 to rule "
            f"out precision.")


def require_finite(value, what: str, plan: DevicePlan, step: int | None = None) -> None:
    """Raise NonFiniteError unless `value` (a number or a tensor) is finite everywhere."""
    finite = bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(float(value))
    if not finite:
        shown = "NaN or infinite" if isinstance(value, torch.Tensor) else value
        raise NonFiniteError(non_finite_message(what, shown, plan, step))


@torch.no_grad()
def require_finite_logits(model, tokenizer, plan: DevicePlan, text: str = PROBE_TEXT) -> None:
    """One forward pass on a short chat; NonFiniteError if any logit is NaN or infinite."""
    chat = [{"role": "user", "content": text}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    device = next(model.parameters()).device
    logits = model(input_ids=ids["input_ids"].to(device), attention_mask=ids["attention_mask"].to(device)).logits
    require_finite(logits, "model's output (logits)", plan)


class FiniteLossCallback(TrainerCallback):
    """Stops training at the first logged loss that is NaN or infinite.

    The Trainer's `logging_nan_inf_filter` (on by default) logs the running mean in place of a non-finite loss, which
    would hide exactly what this looks for, so the callback turns it off when training begins. Only losses are read:
    under fp16 a gradient norm is infinite whenever the gradient scaler skips a step, which is normal."""

    def __init__(self, plan: DevicePlan):
        self.plan = plan

    def on_train_begin(self, args, state, control, **kwargs):
        args.logging_nan_inf_filter = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, what in (("loss", "training loss"), ("eval_loss", "dev loss")):
            if (logs or {}).get(key) is not None:
                require_finite(logs[key], what, self.plan, state.global_step)
