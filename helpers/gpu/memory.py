"""GPU memory each stage of a profile needs, computed from parameter counts and dtypes: `python -m helpers.gpu.memory`.

Parameter counts come from transformers' own model class built on the meta device (no weights, no download)
from the architecture numbers in each model's config.json, copied below because the hub is not reachable
everywhere this runs. Dtypes come from `helpers.devices`, the same rule the notebooks load with.

The figures are estimates of the peak, in GiB, with these terms (bytes per parameter unless said):

- full SFT: fp32 master weights under bf16 or fp16 autocast on every GPU (`helpers.devices`), so weights,
  gradients and AdamW's two states are 16;
- LoRA: the frozen base in the GPU's dtype, fp32 adapters (PEFT's default) with AdamW (16); QLoRA: linear
  layers in NF4 with double quantisation (4.13 bits) and every other weight in fp32
  (`prepare_model_for_kbit_training` casts them), adapters in bf16 on bf16 GPUs (TRL casts them) and in fp32
  below compute capability 8.0 (`helpers.gpu.precision`), with paged 8-bit AdamW (2 for its states);
- activations with gradient checkpointing: each layer's input kept (2·b·s·h bytes per layer) plus one
  layer recomputed (34·b·s·h bytes, Korthikanti et al. 2022, with fused attention); SFT's loss never
  builds the full logits (TRL's chunked LM head); GRPO's per-token log-probabilities do (b·s·V in fp32);
- GRPO: the policy is the model `grpo_start` names (the full-SFT model or the merged LoRA model), trained as
  above; a reference copy only without LoRA and with beta > 0; vLLM colocated with the trainer, where a profile
  turns it on, takes `vllm_gpu_memory_utilization` of the card (in server mode it has GPUs of its own);
- inference with transformers: the weights plus the KV cache of a full batch (2 · layers · kv_heads ·
  head_dim per token); with vLLM: the weights split over `vllm_tensor_parallel_size` GPUs plus the KV cache
  of one sequence of its `max_model_len` (`VLLM_MAX_MODEL_LEN`), the least its engine starts with, divided by the share of the card the engine
  takes (`VLLM_GPU_MEMORY_UTILIZATION`): it fills that share with more cache, which only adds concurrency;
- 0.5 GiB for the CUDA context and allocator slack on every stage.

b is the per-device batch, s the longest sequence the profile allows, h the hidden size, V the vocabulary.
Real runs usually need less (most sequences are shorter than the limit); a stage marked as not fitting
will not fit.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import lru_cache

import torch

from helpers.agent.backends import VLLM_GPU_MEMORY_UTILIZATION, VLLM_MAX_MODEL_LEN
from helpers.course.profiles import ProfileError, available_profiles, load_profile
from helpers.course.colab import GUIDE
from helpers.course.profiles import display_path
from helpers.course.report import update_readme_section
from helpers.devices import DevicePlan

GIB = 1024 ** 3
CUDA_OVERHEAD_GIB = 0.5
NF4_DOUBLE_QUANT_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 4-bit codes, 8-bit absmax per 64, fp32 per 256 blocks

# From each model's config.json on the Hugging Face hub.
ARCHITECTURES = {
    "Qwen/Qwen2.5-0.5B-Instruct": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                       tie_word_embeddings=True),
    "Qwen/Qwen2.5-1.5B-Instruct": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                       num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                       tie_word_embeddings=True),
    "Qwen/Qwen2.5-3B-Instruct": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                     num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                                     tie_word_embeddings=True),
    "Qwen/Qwen2.5-7B-Instruct": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                     num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                     tie_word_embeddings=False),
    "Qwen/Qwen2.5-14B-Instruct": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                                      num_attention_heads=40, num_key_value_heads=8, vocab_size=152064,
                                      tie_word_embeddings=False),
}

# Cards to compare against: memory as the driver reports it (a "16 GB" T4 shows 15,360 MiB).
GPUS = {"T4": (15.0, (7, 5)), "L4": (22.5, (8, 9)), "A100-40GB": (40.0, (8, 0)), "A100-80GB": (80.0, (8, 0)),
        "H100-80GB": (80.0, (9, 0))}

TABLE_GPUS = ("T4", "A100-80GB")
# The card each GPU profile is written for: every stage's estimate must fit it (tests/test_gpu_memory.py).
TARGET_GPUS = {"gpu-t4": "T4", "gpu-qwen": "A100-80GB", "gpu-qwen14b-seed": "A100-80GB"}
GRPO_STARTS = ("sft_full", "lora")  # `best` is decided after 02 and 03 run, so it cannot be estimated

# The profile values the estimate reads; a GPU profile must set each of them.
PROFILE_KEYS = ("base_model", "lora_base_model", "use_qlora", "lora_r", "max_length", "sft_batch_size",
                "lora_batch_size", "grpo_start", "grpo_use_lora", "grpo_beta", "grpo_prompts_per_step",
                "grpo_num_generations",
                "max_completion_length", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization",
                "vllm_tensor_parallel_size", "inference_backend", "eval_batch_size")


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    linear: int          # weights of the blocks' linear layers: what 4-bit quantisation and LoRA act on
    lora_per_rank: int   # LoRA parameters per unit of rank over the seed's target modules (in + out features)
    hidden_size: int
    num_hidden_layers: int
    kv_width: int        # num_key_value_heads * head_dim
    vocab_size: int


@lru_cache(maxsize=None)
def parameter_counts(model_name: str) -> ParameterCounts:
    """Counted on transformers' model class built on the meta device from the architecture numbers."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    if model_name not in ARCHITECTURES:
        raise ProfileError(f"No architecture numbers for '{model_name}': add its config.json values to "
                           f"helpers.gpu.memory.ARCHITECTURES (known: {', '.join(ARCHITECTURES)}).")
    config = Qwen2Config(**ARCHITECTURES[model_name])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linears = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and name != "lm_head"]
    head_dim = config.hidden_size // config.num_attention_heads
    return ParameterCounts(
        total=sum(p.numel() for p in model.parameters()),
        linear=sum(m.weight.numel() for _, m in linears),
        lora_per_rank=sum(m.in_features + m.out_features for _, m in linears),
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        kv_width=config.num_key_value_heads * head_dim, vocab_size=config.vocab_size,
    )


def _bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def _activations(counts: ParameterCounts, batch: int, seq: int, dtype: torch.dtype) -> float:
    kept = counts.num_hidden_layers * 2 * batch * seq * counts.hidden_size
    return (kept + 34 * batch * seq * counts.hidden_size) * _bytes(dtype) / 2


def full_training(counts: ParameterCounts, plan: DevicePlan, batch: int, seq: int) -> float:
    weights = counts.total * _bytes(plan.train_dtype)
    return 4 * weights + _activations(counts, batch, seq, plan.dtype)  # weights, gradients, two AdamW states


def lora_training(counts: ParameterCounts, plan: DevicePlan, rank: int, batch: int, seq: int,
                  quantized: bool) -> float:
    if quantized:
        frozen = counts.linear * NF4_DOUBLE_QUANT_BYTES + (counts.total - counts.linear) * 4
    else:
        frozen = counts.total * _bytes(plan.dtype)
    if quantized:  # adapter weights and gradients, then paged 8-bit AdamW's two 1-byte states
        adapter = rank * counts.lora_per_rank * ((2 if plan.bf16 else 4) * 2 + 2)
    else:
        adapter = rank * counts.lora_per_rank * 16
    return frozen + adapter + _activations(counts, batch, seq, plan.dtype)


def inference(counts: ParameterCounts, plan: DevicePlan, batch: int, seq: int, tensor_parallel: int = 1) -> float:
    kv_cache = 2 * counts.num_hidden_layers * counts.kv_width * batch * seq * _bytes(plan.dtype)
    return (counts.total * _bytes(plan.dtype) + kv_cache) / tensor_parallel


def stage_estimates(profile: dict, gpu: str) -> dict[str, float]:
    """GiB per stage for one profile on one of GPUS (its compute capability decides the dtypes)."""
    plan = plan_for(gpu)
    missing = [key for key in PROFILE_KEYS if key not in profile]
    if missing:
        raise ProfileError(f"Profile '{profile.get('profile')}' does not set {', '.join(missing)}, which the GPU "
                           f"memory estimate needs: add them to the profile file.")
    p = profile
    base, lora_base = parameter_counts(p["base_model"]), parameter_counts(p["lora_base_model"] or p["base_model"])
    seq, rollout_seq = p["max_length"], p["max_length"] + p["max_completion_length"]
    stages = {
        "02 full SFT": full_training(base, plan, p["sft_batch_size"], seq),
        "03 QLoRA" if p["use_qlora"] else "03 LoRA": lora_training(lora_base, plan, p["lora_r"], p["lora_batch_size"],
                                                                   seq, p["use_qlora"]),
        "03 merge": lora_base.total * _bytes(plan.dtype),
    }
    if p["grpo_start"] not in GRPO_STARTS:
        raise ProfileError(f"Profile '{p['profile']}' sets grpo_start to '{p['grpo_start']}': a GPU profile names "
                           f"the model GRPO starts from ({' or '.join(GRPO_STARTS)}), so that its memory is known.")
    start = base if p["grpo_start"] == "sft_full" else lora_base
    group = p["grpo_num_generations"]  # 04 trains one group of rollouts per micro-batch
    if p["grpo_use_lora"]:
        policy = lora_training(start, plan, 16, group, rollout_seq, quantized=False)
    else:
        policy = full_training(start, plan, group, rollout_seq)
        policy += start.total * _bytes(plan.dtype) if p["grpo_beta"] > 0 else 0  # the reference model
    logits = group * p["max_completion_length"] * start.vocab_size * 4
    stages["04 GRPO"] = policy + logits
    if p["use_vllm"] and p["vllm_mode"] == "colocate":
        stages["04 GRPO"] += p["vllm_gpu_memory_utilization"] * GPUS[gpu][0] * GIB
    largest = max((base, lora_base), key=lambda c: c.total)
    if p["inference_backend"] == "vllm":
        stages["05/06 inference"] = inference(largest, plan, 1, VLLM_MAX_MODEL_LEN,
                                              p["vllm_tensor_parallel_size"]) / VLLM_GPU_MEMORY_UTILIZATION
    else:
        stages["05/06 inference"] = inference(largest, plan, p["eval_batch_size"], rollout_seq)
    return {name: value / GIB + CUDA_OVERHEAD_GIB for name, value in stages.items()}


def plan_for(gpu: str) -> DevicePlan:
    if gpu not in GPUS:
        raise ProfileError(f"Unknown GPU '{gpu}': choose one of {', '.join(GPUS)}.")
    return DevicePlan(gpu_count=1, capability=GPUS[gpu][1], gpu_name=gpu)


def markdown_table(profiles: list[str], gpus: list[str]) -> str:
    """One row per profile and stage, one column per GPU: the estimate, marked when it exceeds the card."""
    header = "| profile | stage | " + " | ".join(f"{gpu} ({GPUS[gpu][0]:.0f} GiB)" for gpu in gpus) + " |"
    rows = [header, "|---|---|" + "---|" * len(gpus)]
    for name in profiles:
        profile = load_profile(name)
        estimates = {gpu: stage_estimates(profile, gpu) for gpu in gpus}
        for stage in estimates[gpus[0]]:
            cells = [f"{estimates[gpu][stage]:.1f}" + ("" if estimates[gpu][stage] <= GPUS[gpu][0] else " (does not fit)")
                     for gpu in gpus]
            rows.append(f"| {name} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    gpu_profiles = [name for name in available_profiles() if name.startswith("gpu-")]
    parser = argparse.ArgumentParser(prog="python -m helpers.gpu.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", help=f"a profile (repeatable; default: {', '.join(gpu_profiles)})")
    parser.add_argument("--gpu", action="append", help=f"a card to compare with (repeatable; one of {', '.join(GPUS)})")
    parser.add_argument("--write", action="store_true", help=f"also write the default table into {display_path(GUIDE)}")
    args = parser.parse_args(argv)
    try:
        print(markdown_table(args.profile or gpu_profiles, args.gpu or list(TABLE_GPUS)))
        if args.write and not update_readme_section("gpu-memory", markdown_table(gpu_profiles, list(TABLE_GPUS)),
                                                    GUIDE):
            print(f"{display_path(GUIDE)} has no gpu-memory markers; table not written", file=sys.stderr)
    except ProfileError as error:
        print(error, file=sys.stderr)
        return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
