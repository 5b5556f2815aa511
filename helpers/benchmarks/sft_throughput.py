"""Benchmark: SFT tokens/s of our CPU configuration against TRL's defaults, same model and data, one run.

Run `python -m helpers.benchmarks.sft_throughput --profile cpu-tiny` after 01 and 02 have built the
data and the base model. Each configuration trains in its own process (so peak memory is its own).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    "ours (bf16 off, no checkpointing, full-logits loss)": {"bf16": False, "activation_checkpointing": False, "full_logits": True},
    "TRL defaults (bf16, gradient checkpointing)": {"full_logits": False},
}


def train_once(profile: str, steps: int, settings: dict) -> dict:
    import torch
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from helpers.models import load_trained, models_dir
    from helpers.paths import profile_data_dir
    from helpers.training import FullLogitsSFTTrainer

    torch.manual_seed(0)
    model, tokenizer = load_trained(models_dir(profile) / "base")
    data = load_dataset("json", data_files=str(profile_data_dir(profile) / "datasets" / "stepwise_train.jsonl"),
                        split="train").select_columns(["prompt", "completion"])
    overrides = {k: v for k, v in settings.items() if k != "full_logits"}
    config = SFTConfig(output_dir="/tmp/sft-benchmark", max_steps=steps, per_device_train_batch_size=8,
                       learning_rate=1e-3, completion_only_loss=True, logging_steps=steps, save_strategy="no",
                       report_to="none", use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True, seed=0,
                       train_sampling_strategy="sequential", **overrides)
    trainer_class = FullLogitsSFTTrainer if settings["full_logits"] else SFTTrainer
    trainer = trainer_class(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    lengths = trainer.train_dataset["input_ids"][: steps * 8]
    tokens = sum(len(ids) for ids in lengths)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "bf16": config.bf16, "activation_checkpointing": config.activation_checkpointing,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.profile, args.steps, CONFIGS[args.one])))
        return
    rows = {}
    for name in CONFIGS:
        out = subprocess.run([sys.executable, "-m", "helpers.benchmarks.sft_throughput", "--profile", args.profile,
                              "--steps", str(args.steps), "--one", name], capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"SFT on the {args.profile} base model, {args.steps} steps of 8 examples each, same data order\n")
    print("| configuration | bf16 | checkpointing | tokens/s | peak RSS |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['bf16']} | {r['activation_checkpointing']} | {r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} MB |")
    ours, defaults = rows.values()
    print(f"\nours / TRL defaults: {ours['tokens_per_s'] / defaults['tokens_per_s']:.1f}x the tokens per second")


if __name__ == "__main__":
    main()
