"""Benchmark: episodes/s of batched rollouts against one at a time, same model and tasks, one run.

Three ways to run the same episodes with greedy replies:
- one at a time: one chat per generate call, the whole chat read again at every step;
- batched: all episodes' next steps in one left-padded generate call, the chats read again at every step;
- batched with cached conversations (the evaluation default): the same, but each chat's KV cache is kept
  from one step to the next, so only the new turns are read.

Run `python -m helpers.benchmarks.rollouts --profile cpu-smollm2` once 02_sft_full has trained a model.
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.agent.backends import TransformersBackend
from helpers.agent.policy import ModelPolicy
from helpers.agent.prompts import PromptFormat
from helpers.course.profiles import load_profile
from helpers.harness.episode import run_episodes
from helpers.paths import profile_data_dir
from helpers.tasks import load_tasks
from helpers.training.models import load_trained, models_dir

MODES = {"one at a time": (False, True), "batched": (False, False), "batched, cached conversations": (True, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--skip-single", action="store_true", help="leave out the slow one-at-a-time run")
    args = parser.parse_args()
    params = load_profile(args.profile)
    prompt_format = PromptFormat.from_profile(params)
    tasks = load_tasks(profile_data_dir(args.profile) / "tasks" / "test_normal.jsonl")[: args.tasks]
    model, tokenizer = load_trained(models_dir(args.profile) / args.model)
    max_new_tokens = params.get("max_new_tokens", 256)
    print(f"{args.model} of {args.profile}, {len(tasks)} test_normal tasks, prompt style {prompt_format.style}, "
          f"{torch.get_num_threads()} threads\n")
    print("| rollouts | episodes | steps | seconds | episodes/s | TGC |\n|---|---|---|---|---|---|")
    rates = {}
    for mode, (reuse_cache, single) in MODES.items():
        if single and args.skip_single:
            continue
        batch = 1 if single else len(tasks)
        backend = TransformersBackend(model, tokenizer, args.model, max_new_tokens, batch, reuse_cache=reuse_cache)
        torch.manual_seed(0)
        started = time.perf_counter()
        episodes = run_episodes(tasks, ModelPolicy(backend, prompt_format), max_steps=args.max_steps, batch_size=batch)
        seconds = time.perf_counter() - started
        rates[mode] = len(episodes) / seconds
        tgc = 100 * sum(e.result.success for e in episodes) / len(episodes)
        print(f"| {mode} | {len(episodes)} | {sum(len(e.steps) for e in episodes)} | {seconds:.1f} | "
              f"{rates[mode]:.3f} | {tgc:.1f} |", flush=True)
    baseline = rates.get("one at a time") or rates["batched"]
    for mode, rate in rates.items():
        print(f"{mode}: {rate / baseline:.1f}x the episodes per second of "
              f"{'one at a time' if 'one at a time' in rates else 'batched'}")


if __name__ == "__main__":
    main()
