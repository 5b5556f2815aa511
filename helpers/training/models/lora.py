"""LoRA and QLoRA: the seed's adapter settings, 4-bit loading, merging, and unsloth's fast path on GPUs."""
from __future__ import annotations

from pathlib import Path

from helpers.devices import DevicePlan, device_plan

# the capstone's LoRA target: every attention and MLP projection of a Llama/Qwen-style block
SEED_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# unsloth 2026.10.9 declares transformers<=5.17.0, trl<=1.15.0 and datasets<5.0.0: it cannot share an
# environment with this repository's pins, so no requirement set installs it (docs/gpus-and-colab.md).
UNSLOTH_MISSING = ("use_unsloth needs unsloth, which no requirement set of this repository installs (its "
                   "declared transformers<=5.17.0 and trl<=1.15.0 are older than the pins): set use_unsloth "
                   "to false, or install unsloth in an environment of its own.")


def qlora_quantization_config(plan: DevicePlan | None = None):
    """The seed's 4-bit config: NF4 weights, double quantisation, computing in the GPU's dtype (bf16 on Ampere
    and newer, fp16 on a T4). Needs a CUDA GPU and bitsandbytes to load a model with it."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=(plan or device_plan()).dtype,
    )


def load_4bit_for_training(model_name: str, plan: DevicePlan | None = None):
    """A hub model loaded in 4 bits and prepared for k-bit training (QLoRA); GPU only."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    plan = plan or device_plan()
    if not plan.on_gpu:
        raise RuntimeError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); on a CPU set use_qlora to false.")
    model = AutoModelForCausalLM.from_pretrained(model_name, quantization_config=qlora_quantization_config(plan),
                                                 **plan.load_kwargs(quantized=True))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)


def merge_adapter(base_name: str, adapter_dir: str | Path, plan: DevicePlan | None = None):
    """The base reloaded unquantised in the GPU's dtype, with the adapter merged in: what a QLoRA run saves."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plan = plan or device_plan()
    base = AutoModelForCausalLM.from_pretrained(base_name, **plan.load_kwargs())
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def load_unsloth(model_name: str, max_seq_length: int, r: int, lora_alpha: int, lora_dropout: float, seed: int,
                 plan: DevicePlan | None = None):
    """unsloth's fast path: a 4-bit model with LoRA attached in one call; GPU only, not run on the CPU profiles."""
    try:
        from unsloth import FastLanguageModel
    except ImportError:
        raise RuntimeError(UNSLOTH_MISSING) from None

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_name, max_seq_length=max_seq_length,
                                                         load_in_4bit=True, dtype=(plan or device_plan()).dtype)
    model = FastLanguageModel.get_peft_model(
        model, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=SEED_TARGET_MODULES,
        bias="none", use_gradient_checkpointing="unsloth", random_state=seed,
    )
    return model, tokenizer


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
