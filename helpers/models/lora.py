"""LoRA and QLoRA: the seed's adapter settings, 4-bit loading and unsloth's fast path on GPUs."""
from __future__ import annotations

import torch

# the capstone's LoRA target: every attention and MLP projection of a Llama/Qwen-style block
SEED_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qlora_quantization_config():
    """The seed's 4-bit config: NF4 weights, double quantisation, bf16 compute (needs a CUDA GPU and bitsandbytes)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_4bit_for_training(model_name: str):
    """A hub model loaded in 4 bits and prepared for k-bit training (QLoRA); GPU only."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    if not torch.cuda.is_available():
        raise RuntimeError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); on a CPU set use_qlora to false.")
    model = AutoModelForCausalLM.from_pretrained(model_name, quantization_config=qlora_quantization_config(),
                                                 device_map="auto", dtype=torch.bfloat16)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)


def load_unsloth(model_name: str, max_seq_length: int, r: int, lora_alpha: int, lora_dropout: float, seed: int):
    """unsloth's fast path: a 4-bit model with LoRA attached in one call; GPU only, not run on the CPU profiles."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_name, max_seq_length=max_seq_length,
                                                         load_in_4bit=True, dtype=None)
    model = FastLanguageModel.get_peft_model(
        model, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=SEED_TARGET_MODULES,
        bias="none", use_gradient_checkpointing="unsloth", random_state=seed,
    )
    return model, tokenizer


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
