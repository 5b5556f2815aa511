"""Benchmark: episodes/s of batched rollouts against one-at-a-time, same model and tasks, one run.

Run `python -m helpers.benchmarks.rollouts --profile cpu-tiny` once 02_sft_full has trained a model.
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.agent import ModelPolicy
from helpers.backends import TransformersBackend
from helpers.episode import run_episodes
from helpers.models import load_trained, models_dir
from helpers.paths import profile_data_dir
from helpers.profiles import load_profile
from helpers.prompts import PromptFormat
from helpers.tasks import load_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-tiny")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    params = load_profile(args.profile)
    prompt_format = PromptFormat(params.get("prompt_style", "seed"), params.get("history_observation_chars", 400),
                                 params.get("latest_observation_chars", 2000))
    tasks = load_tasks(profile_data_dir(args.profile) / "tasks" / "test_normal.jsonl")[: args.tasks]
    model, tokenizer = load_trained(models_dir(args.profile) / args.model)
    torch.manual_seed(0)
    rates = {}
    for batch in (1, args.batch):
        policy = ModelPolicy(TransformersBackend(model, tokenizer, args.model, 256, batch), prompt_format)
        started = time.perf_counter()
        episodes = run_episodes(tasks, policy, batch_size=batch)
        seconds = time.perf_counter() - started
        rates[batch] = len(episodes) / seconds
        print(f"batch {batch:>3}: {len(episodes)} episodes, {sum(len(e.steps) for e in episodes)} steps, "
              f"{seconds:.1f} s, {rates[batch]:.2f} episodes/s, TGC {100 * sum(e.result.success for e in episodes) / len(episodes):.1f}")
    print(f"\nbatched / one at a time: {rates[args.batch] / rates[1]:.1f}x the episodes per second")


if __name__ == "__main__":
    main()
