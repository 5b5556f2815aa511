"""Measurement: is a fall of GRPO's sampled reward the items the steps drew, or the policy?

`04` logs `rollouts/sampled_reward`, the mean reward of each step's batch as the policy first played it; its
first quarter of steps against its last is the training curve. But each step draws other pool items, so the
two quarters compare different requests. This replays the pool items of the first and of the last quarter of a
run's steps (the order `04` lays out for its seed) with the start model and with the trained model, sampled as
`04` samples them, and prints the four means: a difference between the quarters that both models show is the
items; a difference between the models is the policy.

    python -m helpers.benchmarks.sampled_curve --profile cpu-smollm2 --seed 3 --trained grpo

`--trained` and `--start` take a folder of results/<profile>/models/ or a path to a saved model; `--seed` must
be the seed the GRPO run was made with (it fixes the pool and its order); `--groups` plays each item that many
groups of `grpo_num_generations` rollouts.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from helpers.agent.model_format import format_for
from helpers.agent.prompts import PromptFormat
from helpers.course.profiles import load_profile
from helpers.devices import device_plan
from helpers.rl.pool import RolloutItem, chat_items, episode_items, step_order
from helpers.rl.probe import quarter_length
from helpers.rl.rewards import RewardWeights, total_reward
from helpers.rl.rollouts import RolloutSettings, local_sampler, play
from helpers.training.models import load_trained, models_dir


def quarter_items(ordered: list[RolloutItem], groups_per_step: int, steps: int) -> dict[str, list[RolloutItem]]:
    """The items of the first and of the last quarter of `steps` steps (at least one step each), as TRL plays
    the ordered pool: step k takes the next `groups_per_step` items."""
    quarter = quarter_length(steps)
    return {"first": ordered[:quarter * groups_per_step],
            "last": ordered[(steps - quarter) * groups_per_step:steps * groups_per_step]}


def model_path(profile: str, name: str) -> Path:
    path = Path(name)
    return path if path.is_dir() else models_dir(profile) / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--seed", type=int, default=None, help="the GRPO run's seed (default: the profile's)")
    parser.add_argument("--start", default="sft_full")
    parser.add_argument("--trained", default="grpo")
    parser.add_argument("--groups", type=int, default=2, help="groups of rollouts per item")
    args = parser.parse_args()
    params = load_profile(args.profile)
    seed = params.get("seed", 0) if args.seed is None else args.seed
    paths = {"start": model_path(args.profile, args.start), "trained": model_path(args.profile, args.trained)}
    missing = [str(p) for p in paths.values() if not (p / "config.json").exists()]
    if missing:
        raise SystemExit(f"No saved model in {', '.join(missing)}: train it first (02 for sft_full, 04 for grpo).")
    device = device_plan()
    prompt_format = format_for(paths["start"], PromptFormat.from_profile(params))
    pool_items = episode_items(params["grpo_pool_episodes"], seed, prompt_format) + (
        chat_items(params["grpo_pool_chats"], seed) if params.get("grpo_pool_chats") else [])
    ordered = step_order(pool_items, params["grpo_prompts_per_step"], params.get("grpo_chat_groups"), seed)
    quarters = quarter_items(ordered, params["grpo_prompts_per_step"], params["grpo_max_steps"])
    group = params["grpo_num_generations"] * args.groups
    weights = RewardWeights.from_dict(params.get("grpo_reward_weights"))
    settings = RolloutSettings.from_profile(params)
    rows = []
    for role, path in paths.items():
        model, tokenizer = load_trained(path, device)
        for quarter, items in quarters.items():
            started = time.perf_counter()
            sampler = local_sampler(model, tokenizer, params["grpo_temperature"], params.get("grpo_top_p", 1.0),
                                    seed=seed, dtype=device.dtype, batch_size=params.get("generation_batch_size", 16))
            rollouts = play([item for item in items for _ in range(group)], sampler, tokenizer, settings)
            outcomes = [r.outcome.as_dict() for r in rollouts]
            rows.append({"model": role, "quarter": quarter, "items": len(items), "rollouts": len(rollouts),
                         "reward": sum(total_reward(outcomes, weights)) / len(rollouts),
                         "success": sum(o["success"] for o in outcomes) / len(rollouts),
                         "seconds": round(time.perf_counter() - started)})
            print(rows[-1], flush=True)
        del model
    table = pd.DataFrame(rows)
    print(f"\n{args.profile}, seed {seed}: start {paths['start']}, trained {paths['trained']}, temperature "
          f"{params['grpo_temperature']}, {group} rollouts per item")
    print(table.pivot(index="model", columns="quarter", values="reward").round(2).to_string())
    print(table.pivot(index="model", columns="quarter", values="success").round(2).to_string())


if __name__ == "__main__":
    main()
