"""Benchmark: SFT tokens/s of our CPU configuration against TRL's defaults, same model and data, one run.

Run `python -m helpers.benchmarks.sft_throughput --profile cpu-smollm2` after 01 has written the data (and,
for the tiny profiles, 02 has built the base model). Each configuration trains in its own process, so
peak memory is its own; both train on the same records in the same order.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# "ours" is what 02 runs on a CPU: bf16 autocast only where the device computes bf16 natively (helpers/devices.py),
# and the LM head only on the trained positions (helpers/training/trainers.py). The trainer is the last field's class.
CONFIGS = {
    "ours: bf16 where native, no gradient checkpointing, LM head on trained positions":
        {"bf16": "plan", "activation_checkpointing": False, "trainer": "scored"},
    "ours, but the LM head on every position (transformers' loss)":
        {"bf16": "plan", "activation_checkpointing": False, "trainer": "transformers"},
    "ours, but TRL's chunked LM head (SFTTrainer's loss)":
        {"bf16": "plan", "activation_checkpointing": False, "trainer": "trl"},
    "fp32, no gradient checkpointing, LM head on trained positions":
        {"bf16": False, "activation_checkpointing": False, "trainer": "scored"},
    "TRL defaults: bf16, gradient checkpointing (SFTTrainer's loss)": {"trainer": "trl"},
}


def train_once(profile: str, steps: int, settings: dict) -> dict:
    import torch
    from trl import SFTConfig

    from helpers.benchmarks.common import profile_base_model, profile_sft_data
    from helpers.devices import device_plan
    from transformers import Trainer
    from trl import SFTTrainer

    from helpers.training.trainers import ScoredLogitsSFTTrainer

    class TransformersLossSFTTrainer(SFTTrainer):  # the model's own loss: logits of every position
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    settings = dict(settings)
    trainer_class = {"scored": ScoredLogitsSFTTrainer, "transformers": TransformersLossSFTTrainer,
                     "trl": SFTTrainer}[settings.pop("trainer")]
    if settings.get("bf16") == "plan":
        settings = {**settings, "bf16": device_plan().bf16}
    torch.manual_seed(0)
    params, data, episode_format = profile_sft_data(profile)
    model, tokenizer = profile_base_model(profile, params, episode_format)
    batch = params.get("sft_batch_size", 8)
    config = SFTConfig(output_dir="/tmp/sft-benchmark", max_steps=steps, per_device_train_batch_size=batch,
                       learning_rate=params.get("sft_learning_rate", 1e-4), assistant_only_loss=episode_format,
                       max_length=params.get("max_length", 1024), logging_steps=steps, save_strategy="no",
                       report_to="none", use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True, seed=0,
                       train_sampling_strategy="sequential", **settings)
    trainer = trainer_class(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"][: steps * batch])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "bf16": config.bf16, "activation_checkpointing": config.activation_checkpointing,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.profile, args.steps, CONFIGS[args.one])))
        return
    rows = {}
    for name in CONFIGS:
        out = subprocess.run([sys.executable, "-m", "helpers.benchmarks.sft_throughput", "--profile", args.profile,
                              "--steps", str(args.steps), "--one", name], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{name} failed:\n{out.stderr[-2000:]}")
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"SFT of the {args.profile} base model, {args.steps} steps, same records in the same order\n")
    print("| configuration | tokens | seconds | tokens/s | peak RSS |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['tokens']:,} | {r['seconds']:.0f} | {r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} MB |")
    ours, every_position, trl_head, fp32, defaults = rows.values()
    print(f"\nours: {ours['tokens_per_s'] / defaults['tokens_per_s']:.1f}x the tokens per second of TRL's defaults, "
          f"{ours['tokens_per_s'] / every_position['tokens_per_s']:.2f}x those of the LM head on every position, "
          f"{ours['tokens_per_s'] / trl_head['tokens_per_s']:.2f}x those of TRL's chunked head, "
          f"{ours['tokens_per_s'] / fp32['tokens_per_s']:.1f}x those of fp32 (bf16 here: {ours['bf16']})")


if __name__ == "__main__":
    main()
