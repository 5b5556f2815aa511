"""Benchmark: what a GRPO step on whole episodes costs, and where the time goes, one run.

1. Episodes per second on the same fresh rollout tasks: the evaluation harness (`run_episodes` with the
   model's greedy policy, text chats) against the rollout function's `play` (token ids kept as written),
   greedy, and sampled at the profile's temperature.
2. A few GRPO steps of the profile's episode mode from its SFT model: seconds per step, split into rollouts
   (generation and the sandboxes) and training (log-probabilities, loss, backward, optimizer).

Run `python -m helpers.benchmarks.grpo_step --profile cpu-smollm2` once 02_sft_full has trained a model.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from datasets import Dataset

from helpers.agent.backends import TransformersBackend
from helpers.agent.decoding import Decoder, TokenText
from helpers.agent.policy import ModelPolicy
from helpers.agent.prompts import PromptFormat
from helpers.course.profiles import load_profile
from helpers.devices import device_plan
from helpers.harness.episode import run_episodes
from helpers.rl.grpo import EpisodeGRPOTrainer, EpisodeRolloutFunction
from helpers.rl.pool import RolloutPool, chat_items, episode_items, step_order
from helpers.rl.rewards import OUTCOME_REWARDS, RewardWeights
from helpers.rl.rollouts import DecoderSampler, RolloutSettings, play
from helpers.training.models import load_trained, models_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--tasks", type=int, default=26)
    parser.add_argument("--steps", type=int, default=2, help="GRPO steps to time (0: rollouts only)")
    args = parser.parse_args()
    params = load_profile(args.profile)
    device = device_plan()
    prompt_format = PromptFormat.from_profile(params)
    settings = RolloutSettings.from_profile(params)
    items = episode_items(args.tasks, params.get("seed", 0) + 7, prompt_format)
    model, tokenizer = load_trained(models_dir(args.profile) / args.model, device)
    print(f"{args.model} of {args.profile}, {len(items)} fresh rollout tasks, {torch.get_num_threads()} threads\n")

    print("| how | episodes | seconds | episodes/s | success % |\n|---|---|---|---|---|")
    rates = {}
    backend = TransformersBackend(model, tokenizer, args.model, settings.reply_tokens, len(items))
    started = time.perf_counter()
    episodes = run_episodes([i.task for i in items], ModelPolicy(backend, prompt_format),
                            max_steps=settings.max_steps, batch_size=len(items))
    rates["evaluation harness, greedy"] = (len(episodes), time.perf_counter() - started,
                                           sum(e.result.success for e in episodes))
    temperature = params.get("grpo_temperature", 1.0)
    for label, temp in (("rollout function, greedy", 0.0), (f"rollout function, sampled at {temperature}", temperature)):
        decoder = Decoder(model, [tokenizer.eos_token_id], token_text=TokenText(tokenizer))
        started = time.perf_counter()
        rollouts = play(items, DecoderSampler(decoder, temp), tokenizer, settings)
        rates[label] = (len(rollouts), time.perf_counter() - started, sum(r.outcome.success for r in rollouts))
    for label, (count, seconds, successes) in rates.items():
        print(f"| {label} | {count} | {seconds:.1f} | {count / seconds:.2f} | {100 * successes / count:.1f} |")
    harness = rates["evaluation harness, greedy"]
    greedy = rates["rollout function, greedy"]
    print(f"\nrollout function: {(greedy[0] / greedy[1]) / (harness[0] / harness[1]):.2f}x the episodes/s of the harness\n")
    if args.steps == 0:
        return

    from trl import GRPOConfig

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    del model
    model, tokenizer = load_trained(models_dir(args.profile) / args.model, device, training=True)
    seed = params.get("seed", 0)
    pool_items = episode_items(params.get("grpo_pool_episodes", 208), seed, prompt_format) + (
        chat_items(params.get("grpo_pool_chats", 0), seed) if params.get("grpo_pool_chats", 0) else [])
    weights = RewardWeights.from_dict(params.get("grpo_reward_weights"))
    generations, groups = params.get("grpo_num_generations", 4), params.get("grpo_prompts_per_step", 4)
    ordered = step_order(pool_items, groups, params.get("grpo_chat_groups"), seed)  # each step's mix, as 04 plays it
    rollout_func = EpisodeRolloutFunction(RolloutPool(pool_items, seed), tokenizer, settings, weights,
                                          temperature=temperature, resample_rounds=params.get("grpo_resample_rounds", 0),
                                          oversample_groups=params.get("grpo_oversample_groups", 0), seed=seed,
                                          spare_candidates=params.get("grpo_spare_candidates", 1),
                                          decode_dtype=device.dtype, batch_size=params.get("generation_batch_size", 16))
    with tempfile.TemporaryDirectory() as output:
        config = GRPOConfig(output_dir=output, max_steps=args.steps, learning_rate=params.get("grpo_learning_rate", 2e-5),
                            num_generations=generations, per_device_train_batch_size=generations,
                            gradient_accumulation_steps=groups, temperature=temperature, beta=params.get("grpo_beta", 0.0),
                            scale_rewards="group", loss_type="dapo", lr_scheduler_type="constant",
                            reward_weights=weights.as_list(), logging_steps=1, save_strategy="no", report_to="none",
                            bf16=device.bf16, use_cpu=not device.on_gpu,
                            max_completion_length=settings.max_completion_tokens,
                            shuffle_dataset=params.get("grpo_chat_groups") is None)
        trainer = EpisodeGRPOTrainer(model=model, reward_funcs=list(OUTCOME_REWARDS), args=config,
                                     train_dataset=Dataset.from_list([{"prompt": i.prompt} for i in ordered]),
                                     processing_class=tokenizer, rollout_func=rollout_func,
                                     compile_layers=params.get("grpo_compile", True) and not device.on_gpu)
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    rollout_seconds = sum(h["seconds"] for h in rollout_func.history)
    tokens = sum(len(r.completion_ids) for r in rollout_func.last_rollouts)
    print(f"GRPO: {args.steps} steps of {groups} groups x {generations} rollouts in {total:.0f} s: "
          f"{total / args.steps:.0f} s per step, rollouts {rollout_seconds / args.steps:.0f} s "
          f"({100 * rollout_seconds / total:.0f}%), training {(total - rollout_seconds) / args.steps:.0f} s; "
          f"the last step's {len(rollout_func.last_rollouts)} rollouts held {tokens} completion tokens; "
          f"groups replaced for having one score: {[h['replaced_groups'] for h in rollout_func.history]}")


if __name__ == "__main__":
    main()
