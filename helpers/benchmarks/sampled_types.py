"""Measurement: which training types a model's sampled rollouts split on, as GRPO samples them. A group of one
request teaches only when its rollouts score differently, so a type solved in every sample (or in none) spends
rollouts for nothing: this shows where GRPO's gradient can come from before a run.

`python -m helpers.benchmarks.sampled_types --profile cpu-smollm2 --model sft_full` plays `--items` pool tasks of
each training type (the rollout pool's own, never a held-out phrasing), `--samples` times each, at the profile's
GRPO temperature, with GRPO's rollout function, and prints one row per type.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import pandas as pd

from helpers.agent.model_format import format_for
from helpers.agent.prompts import PromptFormat
from helpers.course.profiles import load_profile
from helpers.devices import device_plan
from helpers.rl.pool import episode_items
from helpers.rl.rewards import RewardWeights, total_reward, totals_differ
from helpers.rl.rollouts import RolloutSettings, local_sampler, play
from helpers.training.models import load_trained, models_dir


def split_by_type(table: pd.DataFrame) -> pd.DataFrame:
    """From one row per rollout (`type`, `item`, `success`, `total`): per type, the successes and the groups (the
    rollouts of one item) whose totals differ, the only ones with a gradient."""
    groups = table.groupby(["type", "item"])["total"].agg(lambda totals: totals_differ(list(totals)))
    per_type = table.groupby("type").agg(rollouts=("success", "size"), successes=("success", "sum"))
    per_type["groups"] = groups.groupby("type").size()
    per_type["groups_that_split"] = groups.groupby("type").sum().astype(int)
    return per_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--items", type=int, default=2, help="pool tasks per training type")
    parser.add_argument("--samples", type=int, default=4, help="rollouts per task (a GRPO group)")
    parser.add_argument("--seed", type=int, default=1, help="the sampler's seed")
    args = parser.parse_args()
    params = load_profile(args.profile)
    device = device_plan()
    path = models_dir(args.profile) / args.model
    prompt_format = format_for(path, PromptFormat.from_profile(params))
    model, tokenizer = load_trained(path, device)
    by_type = defaultdict(list)
    for item in episode_items(params["grpo_pool_episodes"], params.get("seed", 0), prompt_format):
        by_type[item.task.scenario].append(item)
    items = [item for name in sorted(by_type) for item in by_type[name][:args.items]]
    temperature = params.get("grpo_temperature", 1.0)
    started = time.perf_counter()
    rollouts = play([item for item in items for _ in range(args.samples)],
                    local_sampler(model, tokenizer, temperature, seed=args.seed, dtype=device.dtype),
                    tokenizer, RolloutSettings.from_profile(params))
    outcomes = [r.outcome.as_dict() for r in rollouts]
    table = pd.DataFrame({"type": [r.item.task.scenario for r in rollouts], "item": [r.item.key for r in rollouts],
                          "success": [o["success"] for o in outcomes],
                          "total": total_reward(outcomes, RewardWeights.from_dict(params.get("grpo_reward_weights")))})
    per_type = split_by_type(table)
    print(f"{args.model} of {args.profile}: {len(items)} pool tasks x {args.samples} samples at temperature "
          f"{temperature}, {time.perf_counter() - started:.0f} s\n")
    print("| type | successes | groups that split |\n|---|---|---|")
    for name, row in per_type.iterrows():
        print(f"| {name} | {row['successes']} of {row['rollouts']} | {row['groups_that_split']} of {row['groups']} |")
    print(f"| all | {per_type['successes'].sum()} of {per_type['rollouts'].sum()} | "
          f"{per_type['groups_that_split'].sum()} of {per_type['groups'].sum()} |")


if __name__ == "__main__":
    main()
