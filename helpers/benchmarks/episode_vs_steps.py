"""Benchmark: one epoch on the same expert episodes as episode chats and as step records, tokens and seconds.

Both teach the same next steps (tests/test_episodes.py shows the losses per turn are equal); step records
read each episode's history again for every step. Run after 01 has written the data of an episode-style
profile: `python -m helpers.benchmarks.episode_vs_steps --profile cpu-smollm2 --episodes 16`. Each format
trains in its own process, from the same base model, with the profile's batch size and learning rate.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def train_once(profile: str, episodes: int, layout: str) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from helpers.benchmarks.common import profile_base_model
    from helpers.course.profiles import load_profile
    from helpers.data.files import read_jsonl
    from helpers.paths import profile_data_dir
    from helpers.training.trainers import ScoredLogitsSFTTrainer

    torch.manual_seed(0)
    params = load_profile(profile)
    folder = profile_data_dir(profile) / "datasets"
    chats = read_jsonl(folder / "episodes_train.jsonl")[:episodes]
    if layout == "episodes":
        data = Dataset.from_list([{"messages": r["messages"]} for r in chats])
    else:
        tasks = {r["task_id"] for r in chats}
        data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]}
                                  for r in read_jsonl(folder / "stepwise_train.jsonl") if r["task_id"] in tasks])
    model, tokenizer = profile_base_model(profile, params, episode_format=True)
    config = SFTConfig(output_dir="/tmp/episode-benchmark", num_train_epochs=1,
                       per_device_train_batch_size=params.get("sft_batch_size", 4),
                       learning_rate=params.get("sft_learning_rate", 1e-4), assistant_only_loss=layout == "episodes",
                       max_length=params.get("max_length", 1536), logging_steps=1, save_strategy="no", report_to="none",
                       use_cpu=True, bf16=False, activation_checkpointing=False, dataloader_pin_memory=False,
                       disable_tqdm=True, seed=0, train_sampling_strategy="group_by_length")
    trainer = ScoredLogitsSFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    return {"records": len(data), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "train_loss": result.training_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.profile, args.episodes, args.one)))
        return
    rows = {}
    for layout in ("episodes", "steps"):
        out = subprocess.run([sys.executable, "-m", "helpers.benchmarks.episode_vs_steps", "--profile", args.profile,
                              "--episodes", str(args.episodes), "--one", layout], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{layout} failed:\n{out.stderr[-2000:]}")
        rows[layout] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"One epoch on {args.episodes} train episodes of {args.profile}\n")
    print("| layout | records | tokens | seconds | tokens/s | mean train loss |\n|---|---|---|---|---|---|")
    for layout, r in rows.items():
        print(f"| {'episode chats' if layout == 'episodes' else 'step records'} | {r['records']} | {r['tokens']:,} | "
              f"{r['seconds']:.0f} | {r['tokens_per_s']:,.0f} | {r['train_loss']:.3f} |")
    episodes, steps = rows["episodes"], rows["steps"]
    print(f"\nstep records / episode chats: {steps['tokens'] / episodes['tokens']:.1f}x the tokens, "
          f"{steps['seconds'] / episodes['seconds']:.1f}x the seconds")


if __name__ == "__main__":
    main()
