"""Benchmark: GRPO's training pass on the same rollouts, plain against compiled, alternated in one process.

Plays one step's groups of the profile's rollout pool once (sampled at its temperature, as `04` plays them), then
times what a GRPO step does with each group besides generating it: the reference model's log-probabilities (when
beta > 0), the loss and its backward pass (the optimizer, the same for both, aside), with `EpisodeGRPOTrainer`
plain and with `compile_layers=True` (`04`'s `grpo_compile`), in alternating rounds on one model. The first
round compiles; the ratio is taken over the others. Model FLOP utilisation (6·N per trained-sequence token,
2·N for the reference pass) is against the bf16 2048² rate measured in the same run.

Run `python -m helpers.benchmarks.grpo_training --profile cpu-smollm2` once 02_sft_full has trained a model.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import torch
from datasets import Dataset

from helpers.agent.prompts import PromptFormat
from helpers.course.profiles import load_profile
from helpers.devices import device_plan
from helpers.rl.grpo import EpisodeGRPOTrainer
from helpers.rl.pool import chat_items, episode_items, step_order
from helpers.rl.rewards import OUTCOME_REWARDS, RewardWeights, total_reward
from helpers.rl.rollouts import Rollout, RolloutSettings, local_sampler, play
from helpers.training.models import load_trained, models_dir


def group_inputs(group: list[Rollout], pad_id: int, weights: RewardWeights) -> dict:
    """One group of rollouts (one prompt) as the trainer's micro-batch: completions right-padded, the world's
    tokens out of the loss (`tool_mask`), advantages normalised within the group as `04` does."""
    width = max(len(r.completion_ids) for r in group)
    completion = torch.full((len(group), width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros_like(completion)
    tool_mask = torch.ones_like(completion)
    for row, rollout in enumerate(group):
        length = len(rollout.completion_ids)
        completion[row, :length] = torch.tensor(rollout.completion_ids)
        completion_mask[row, :length] = 1
        tool_mask[row, :length] = torch.tensor(rollout.env_mask)
    prompt = torch.tensor([r.prompt_ids for r in group])
    totals = torch.tensor(total_reward([r.outcome for r in group], weights))
    return {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
            "completion_mask": completion_mask, "tool_mask": tool_mask,
            "advantages": (totals - totals.mean()) / (totals.std() + 1e-4),
            "num_items_in_batch": (completion_mask * tool_mask).sum()}


def training_pass(trainer: EpisodeGRPOTrainer, batches: list[dict]) -> tuple[float, float, float]:
    """Seconds of the reference pass and of loss + backward over every group, and the mean loss."""
    ref_seconds = loss_seconds = 0.0
    losses = []
    for inputs in batches:
        inputs = dict(inputs)
        if trainer.ref_model is not None:
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            started = time.perf_counter()
            with torch.no_grad():
                inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(
                    trainer.ref_model, ids, attention, inputs["completion_ids"].shape[1])[0]
            ref_seconds += time.perf_counter() - started
        started = time.perf_counter()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
        loss_seconds += time.perf_counter() - started
        trainer.model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return ref_seconds, loss_seconds, statistics.mean(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--groups", type=int, default=0, help="groups to train on (default: the profile's per step)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of plain and compiled; the first compiles")
    args = parser.parse_args()
    from helpers.benchmarks.limits import measure_limits

    params = load_profile(args.profile)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import GRPOConfig

    device = device_plan()
    seed = params.get("seed", 0)
    prompt_format = PromptFormat.from_profile(params)
    settings = RolloutSettings.from_profile(params)
    weights = RewardWeights.from_dict(params.get("grpo_reward_weights"))
    generations = params.get("grpo_num_generations", 4)
    groups = args.groups or params.get("grpo_prompts_per_step", 3)
    temperature = params.get("grpo_temperature", 1.0)
    beta = params.get("grpo_beta", 0.0)
    pool = episode_items(params.get("grpo_pool_episodes", 208), seed, prompt_format) + (
        chat_items(params.get("grpo_pool_chats", 0), seed) if params.get("grpo_pool_chats", 0) else [])
    items = step_order(pool, groups, params.get("grpo_chat_groups"), seed)[:groups]  # the first step's mix
    directory = models_dir(args.profile) / args.model
    model, tokenizer = load_trained(directory, device, training=True)
    limits = measure_limits(shapes=False)
    sampler = local_sampler(model, tokenizer, temperature, seed=seed, dtype=device.dtype,
                            batch_size=params.get("generation_batch_size", 16))
    rollouts = play([item for item in items for _ in range(generations)], sampler, tokenizer, settings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = [group_inputs(rollouts[i:i + generations], pad_id, weights)
               for i in range(0, len(rollouts), generations)]
    tokens = sum(b["prompt_ids"].numel() + b["completion_ids"].numel() for b in batches)
    model_tokens = sum(int(b["num_items_in_batch"]) for b in batches)

    trainers = {}
    output = tempfile.mkdtemp(prefix="grpo-training-benchmark-")  # nothing is saved there
    for compiled in (False, True):
        config = GRPOConfig(output_dir=output, num_generations=generations, per_device_train_batch_size=generations,
                            temperature=temperature, beta=beta, loss_type="dapo", scale_rewards="group",
                            bf16=device.bf16, use_cpu=not device.on_gpu, report_to="none", save_strategy="no",
                            max_completion_length=settings.max_completion_tokens)
        trainer = EpisodeGRPOTrainer(model=model, reward_funcs=list(OUTCOME_REWARDS), args=config,
                                     train_dataset=Dataset.from_list([{"prompt": i.prompt} for i in items]),
                                     processing_class=tokenizer, rollout_func=lambda prompts, trainer: None,
                                     compile_layers=compiled)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this does not run
        trainers[compiled] = trainer
    results = []
    for round_ in range(args.rounds):
        for compiled, trainer in trainers.items():
            with trainer.compiled_models() if compiled else contextlib.nullcontext():
                ref_seconds, loss_seconds, loss = training_pass(trainer, batches)
            results.append({"round": round_ + 1, "compiled": compiled, "ref": ref_seconds, "loss_s": loss_seconds,
                            "loss": loss})

    n = sum(p.numel() for p in model.parameters())
    print(f"GRPO training pass of {args.model} ({args.profile}): {len(batches)} groups x {generations} rollouts, "
          f"{tokens:,} tokens in the trained sequences ({model_tokens:,} of them the model's), beta {beta}; "
          f"{limits.threads} threads, bf16 matrix rate {limits.bf16_gflops:,.0f} GFLOP/s (2048², this run), "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"| trainer | round | reference pass s | loss + backward s | tokens/s | MFU ({6 + (2 if beta else 0)}·N per token) "
          "| mean loss |\n"
          "|---|---|---|---|---|---|---|")
    for r in results:
        seconds = r["ref"] + r["loss_s"]
        flops = (6 + (2 if beta else 0)) * n * tokens / seconds
        print(f"| {'compiled' if r['compiled'] else 'plain'} | {r['round']} | {r['ref']:.1f} | {r['loss_s']:.1f} | "
              f"{tokens / seconds:,.0f} | {100 * limits.mfu(flops):.1f}% | {r['loss']:.5f} |")
    ratios = []
    for round_ in range(2, args.rounds + 1):
        plain, compiled = (next(r for r in results if r["round"] == round_ and r["compiled"] == c) for c in (False, True))
        ratios.append((plain["ref"] + plain["loss_s"]) / (compiled["ref"] + compiled["loss_s"]))
    if ratios:
        print(f"\ncompiled / plain: {statistics.median(ratios):.2f}x the tokens/s, median of rounds 2-{args.rounds} "
              f"({', '.join(f'{x:.2f}' for x in ratios)}); round 1 compiles")


if __name__ == "__main__":
    main()
