"""Measurement: how often a model asks for a detail the user left out when its chats are *sampled*, as GRPO samples
them. GRPO can only reinforce a question that some rollout of a group asks, so the share of groups with at least
one question bounds what the chat rollouts can teach.

`python -m helpers.benchmarks.asking --profile cpu-smollm2 --model sft_full` plays the rollout pool's chats
(training seeds, never held-out ones), `--samples` times each, at each `--temperatures` value, with GRPO's
rollout function, and prints one line per temperature.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from helpers.agent.decoding import Decoder, TokenText
from helpers.course.profiles import load_profile
from helpers.devices import device_plan
from helpers.rl.pool import chat_items
from helpers.rl.rollouts import DecoderSampler, RolloutSettings, play
from helpers.training.models import load_trained, models_dir


def asking_rates(table: pd.DataFrame) -> dict:
    """From one row per chat rollout (`item`, `missing`, `asked`, `success`): how often a chat lacking a detail
    got a question, how many groups (the rollouts of one item) held at least one, and success either way."""
    gaps, complete = table[table["missing"] > 0], table[table["missing"] == 0]
    groups = gaps.groupby("item")["asked"].any()
    return {"rollouts": len(table), "lacking": len(gaps), "asked": int(gaps["asked"].sum()),
            "asked_pct": 100 * gaps["asked"].mean() if len(gaps) else 0.0,
            "groups_lacking": len(groups), "groups_with_a_question": int(groups.sum()),
            "success_lacking_pct": 100 * gaps["success"].mean() if len(gaps) else 0.0,
            "success_after_asking_pct": 100 * gaps[gaps["asked"]]["success"].mean() if gaps["asked"].any() else 0.0,
            "complete": len(complete), "asked_complete": int(complete["asked"].sum()),
            "success_complete_pct": 100 * complete["success"].mean() if len(complete) else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--chats", type=int, default=48, help="chats of the rollout pool")
    parser.add_argument("--samples", type=int, default=4, help="rollouts per chat (a GRPO group)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 1.0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    params = load_profile(args.profile)
    device = device_plan()
    settings = RolloutSettings.from_profile(params)
    model, tokenizer = load_trained(models_dir(args.profile) / args.model, device)
    decoder = Decoder(model, [tokenizer.eos_token_id], dtype=device.dtype, token_text=TokenText(tokenizer))
    items = chat_items(args.chats, params.get("seed", 0))
    print(f"{args.model} of {args.profile}: {len(items)} pool chats x {args.samples} samples\n")
    print("| temperature | chats lacking a detail | asked | groups with a question | success, lacking | "
          "success after asking | complete chats: asked | success, complete | seconds |\n|---|---|---|---|---|---|---|---|---|")
    for temperature in args.temperatures:
        started = time.perf_counter()
        rollouts = play([i for i in items for _ in range(args.samples)],
                        DecoderSampler(decoder, temperature=temperature, seed=args.seed), tokenizer, settings)
        table = pd.DataFrame([{"item": r.item.key, **r.outcome.as_dict()} for r in rollouts])
        r = asking_rates(table)
        print(f"| {temperature} | {r['lacking']} | {r['asked']} ({r['asked_pct']:.1f}%) | "
              f"{r['groups_with_a_question']} of {r['groups_lacking']} | {r['success_lacking_pct']:.1f}% | "
              f"{r['success_after_asking_pct']:.1f}% | {r['asked_complete']} of {r['complete']} | "
              f"{r['success_complete_pct']:.1f}% | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
