"""Benchmark: SFT tokens/s of the CPU training path against the path before it, and as a share of the machine's limits.

Run `python -m helpers.benchmarks.sft_throughput --profile cpu-smollm2` after 01 has written the data (and, for the
tiny profiles, 02 has built the base model). Each configuration trains in its own process (so peak memory is its
own) on the same records in the same order; the two compared configurations alternate (A, B, A, B, ...) so that
a busy machine slows both alike, and the ratio of each pair is reported with its spread. The machine's bf16
matrix rate is measured in the same run (`helpers.benchmarks.limits`), and tokens/s become model FLOP utilisation.
`--all` adds, once each, the older comparisons: the LM head on every position, TRL's chunked head, fp32, TRL's
defaults. `--lora` compares 03's LoRA training instead (the profile's adapter on its frozen base, with dropout),
as 03 trains it (plain layers) and with compiled decoder layers: 0.93x, so 03 does not compile
(docs/benchmarks-speed.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# "ours" is what 02 runs on a CPU: bf16 autocast only where the device computes bf16 natively (helpers/devices.py),
# the LM head only on the trained positions and the decoder layers compiled (helpers/training/trainers.py).
OURS = "ours: bf16 where native, LM head on trained positions, compiled decoder layers"
BEFORE = "before: the same without compiled layers"
CONFIGS = {
    OURS: {"bf16": "plan", "activation_checkpointing": False, "trainer": "scored", "compile_layers": True},
    BEFORE: {"bf16": "plan", "activation_checkpointing": False, "trainer": "scored"},
    "before, but the LM head on every position (transformers' loss)":
        {"bf16": "plan", "activation_checkpointing": False, "trainer": "transformers"},
    "before, but TRL's chunked LM head (SFTTrainer's loss)":
        {"bf16": "plan", "activation_checkpointing": False, "trainer": "trl"},
    "before, in fp32": {"bf16": False, "activation_checkpointing": False, "trainer": "scored"},
    "TRL defaults: bf16, gradient checkpointing (SFTTrainer's loss)": {"trainer": "trl"},
}
# 03 on a CPU: the profile's adapter (dropout included) on the frozen base in the device's inference dtype,
# plain layers; with `lora_numpy_dropout` (off by default) its dropout masks drawn by numpy
# (helpers/training/dropout.py)
LORA_OURS = "LoRA with numpy's dropout masks (lora_numpy_dropout)"
LORA_BEFORE = "LoRA as 03 trains it by default: PyTorch's dropout"
LORA_COMPILED = "LoRA with compiled decoder layers, PyTorch's dropout"
CONFIGS[LORA_OURS] = {**CONFIGS[BEFORE], "lora": True, "numpy_dropout": True}
CONFIGS[LORA_BEFORE] = {**CONFIGS[BEFORE], "lora": True}
CONFIGS[LORA_COMPILED] = {**CONFIGS[OURS], "lora": True}


def training_flops(config, lengths: list[int], scored: list[int], frozen: bool = False) -> dict:
    """Arithmetic of training on records of `lengths` tokens, `scored` of them trained, for a Llama-like `config`:
    forward + backward = 3 × the forward's 2 × multiply-adds. `frozen` (LoRA): the weights get no gradient, so
    their backward is the inputs' gradient only, 2 × the forward (the adapters' few products are left out);
    attention has no weights and keeps its 3×.

    `six_n`: the usual 6 × parameters × tokens, every parameter (the tied embedding too) on every token;
    `model`: what the step computes: the layers' weights on every token, the LM head on the trained positions only,
    and `attention` (causal: on average half the context per token) on top."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_layer = (hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
                 + 3 * hidden * config.intermediate_size)  # gate, up, down
    head = config.vocab_size * hidden
    parameters = layers * per_layer + head * (1 if config.tie_word_embeddings else 2)
    tokens = sum(lengths)
    attention = sum(6 * 2 * layers * heads * head_dim * n * n / 2 for n in lengths)  # QKᵀ and AV, causal
    dense = (4 if frozen else 6) * (layers * per_layer * tokens + head * sum(scored))
    return {"parameters": parameters, "six_n": 6 * parameters * tokens, "model": dense, "attention": attention}


def train_once(profile: str, steps: int, warmup: int, settings: dict) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from helpers.benchmarks.common import profile_base_model, profile_sft_data
    from helpers.devices import device_plan
    from helpers.training.dropout import use_numpy_dropout
    from helpers.training.trainers import ScoredLogitsSFTTrainer

    class TransformersLossSFTTrainer(SFTTrainer):  # the model's own loss: logits of every position
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds = []

        def on_step_begin(self, *args, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    settings = dict(settings)
    trainer_class = {"scored": ScoredLogitsSFTTrainer, "transformers": TransformersLossSFTTrainer,
                     "trl": SFTTrainer}[settings.pop("trainer")]
    options = {"compile_layers": settings.pop("compile_layers")} if "compile_layers" in settings else {}
    if settings.get("bf16") == "plan":
        settings = {**settings, "bf16": device_plan().bf16}
    lora = settings.pop("lora", False)
    numpy_dropout = settings.pop("numpy_dropout", False)
    torch.manual_seed(0)
    params, data, episode_format = profile_sft_data(profile)
    if lora:
        model, tokenizer = lora_model(profile, params, episode_format)
        if numpy_dropout:
            use_numpy_dropout(model)
    else:
        model, tokenizer = profile_base_model(profile, params, episode_format)
    stage = "lora" if lora else "sft"
    batch = params.get(f"{stage}_batch_size", 8)
    config = SFTConfig(output_dir="/tmp/sft-benchmark", max_steps=steps, per_device_train_batch_size=batch,
                       learning_rate=params.get(f"{stage}_learning_rate", 1e-4), assistant_only_loss=episode_format,
                       max_length=params.get("max_length", 1024), logging_steps=steps, save_strategy="no",
                       report_to="none", use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True, seed=0,
                       train_sampling_strategy="sequential", **settings)
    trainer = trainer_class(model=model, args=config, train_dataset=data, processing_class=tokenizer, **options)
    times = StepTimes()
    trainer.add_callback(times)
    records = trainer.train_dataset.select(range(steps * batch))
    lengths = [len(ids) for ids in records["input_ids"]]
    scored = [sum(trainer.data_collator([record])["labels"][0, 1:].ne(-100).tolist()) for record in records]
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    measured = slice(warmup * batch, None)
    flops = training_flops(model.config, lengths[measured], scored[measured], frozen=lora)
    steady_seconds = sum(times.seconds[warmup:])
    return {"steps": steps, "tokens": sum(lengths), "seconds": seconds, "tokens_per_s": sum(lengths) / seconds,
            "steady_tokens": sum(lengths[measured]), "steady_seconds": steady_seconds,
            "steady_tokens_per_s": sum(lengths[measured]) / steady_seconds,
            "warmup_seconds": sum(times.seconds[:warmup]), "loss": result.training_loss,
            "flops_per_s": {k: v / steady_seconds for k, v in flops.items() if k != "parameters"},
            "parameters": flops["parameters"], "bf16": config.bf16,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def lora_model(profile: str, params: dict, episode_format: bool):
    """03's model on a CPU: the profile's LoRA adapter on the frozen base (in the device's inference dtype)."""
    from peft import LoraConfig, get_peft_model

    from helpers.training.models import load_base_model
    from helpers.training.models.lora import SEED_TARGET_MODULES
    from helpers.training.models.templates import use_training_template

    base = load_base_model(profile, params.get("lora_base_model") or params.get("base_model", "tiny"),
                           params.get("tiny_model"))
    if episode_format:
        use_training_template(base.tokenizer)
    config = LoraConfig(r=params.get("lora_r", 16), lora_alpha=params.get("lora_alpha", 32),
                        lora_dropout=params.get("lora_dropout", 0.05), target_modules=SEED_TARGET_MODULES,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base.model, config), base.tokenizer


def run_one(profile: str, steps: int, warmup: int, name: str, threads: int = 0) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    out = subprocess.run([sys.executable, "-m", "helpers.benchmarks.sft_throughput", "--profile", profile,
                          "--steps", str(steps), "--warmup", str(warmup), "--one", name],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s (compilation)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of ours and the path before")
    parser.add_argument("--all", action="store_true", help="also the older comparisons, once each")
    parser.add_argument("--lora", action="store_true",
                        help="03's LoRA training: numpy's dropout masks against PyTorch's "
                             "(--all: also compiled layers)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of every run (default: torch's, every core); 1 steadies the figures of a "
                             "machine that another process shares")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.profile, args.steps, args.warmup, CONFIGS[args.one])))
        return
    import torch

    from helpers.benchmarks.limits import measure_limits

    if args.threads:
        torch.set_num_threads(args.threads)
    limits = measure_limits(shapes=False)
    ours, before = (LORA_OURS, LORA_BEFORE) if args.lora else (OURS, BEFORE)
    loads = [os.getloadavg()[0]]
    pairs = []
    for _ in range(args.rounds):
        pairs.append({name: run_one(args.profile, args.steps, args.warmup, name, args.threads)
                      for name in (before, ours)})
        loads.append(os.getloadavg()[0])
    others = {name: run_one(args.profile, args.steps, args.warmup, name, args.threads)
              for name, settings in CONFIGS.items()
              if args.all and name not in (ours, before) and args.lora == bool(settings.get("lora"))}
    print(f"{'LoRA' if args.lora else 'SFT'} of the {args.profile} base model, {args.steps} steps (tokens/s over "
          f"the last {args.steps - args.warmup}), the same records in the same order, {args.rounds} alternations; "
          f"{limits.threads} threads, bf16 matrix rate {limits.bf16_gflops:,.0f} GFLOP/s (2048², this run), "
          f"load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| configuration | round | tokens/s | first steps s | loss | 6·N·tokens/s MFU | model MFU "
          "(+ attention) | peak RSS |\n|---|---|---|---|---|---|---|---|")
    rows = [(name, str(i + 1), r) for i, pair in enumerate(pairs) for name, r in pair.items()]
    rows += [(name, "-", r) for name, r in others.items()]
    for name, round_, r in rows:
        f = r["flops_per_s"]
        print(f"| {name} | {round_} | {r['steady_tokens_per_s']:,.0f} | {r['warmup_seconds']:.0f} | {r['loss']:.4f} | "
              f"{100 * limits.mfu(f['six_n']):.1f}% | {100 * limits.mfu(f['model']):.1f}% "
              f"({100 * limits.mfu(f['model'] + f['attention']):.1f}%) | {r['peak_rss_mb']:,.0f} MB |")
    ratios = [p[ours]["steady_tokens_per_s"] / p[before]["steady_tokens_per_s"] for p in pairs]
    spread = f" (each round: {', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
    label = "numpy's dropout / PyTorch's" if args.lora else "ours / before"
    print(f"\n{label}: {statistics.median(ratios):.2f}x tokens/s, median of {len(ratios)} rounds{spread}; "
          f"N = {pairs[0][ours]['parameters'] / 1e6:.1f}M parameters")
    for name, r in others.items():
        mean_before = statistics.mean(p[before]["steady_tokens_per_s"] for p in pairs)
        print(f"{name}: {r['steady_tokens_per_s'] / mean_before:.2f}x the tokens/s of `before` (not alternated)")


if __name__ == "__main__":
    main()
