"""Benchmark: one LoRA training step (forward and backward) on a CPU with PEFT's dropout, `Int16Dropout`, and none.

Run `python -m helpers.benchmarks.lora_dropout --profile cpu-smollm2` after 01 has written the data. The model is
03's: the profile's base loaded as 03 loads it, the seed's adapter (r=16, alpha=32, dropout 0.05, seven
projections), the device plan's autocast. The three variants take turns on the same records, so the machine's
noise falls on all of them alike; the first round only warms up.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--records", type=int, default=4, help="training records, each one step per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from helpers.benchmarks.common import profile_sft_data
    from helpers.devices import device_plan
    from helpers.models import load_base_model
    from helpers.models.lora import SEED_TARGET_MODULES, Int16Dropout
    from helpers.models.templates import use_training_template

    params, data, episode_format = profile_sft_data(args.profile)
    plan = device_plan()
    base = load_base_model(args.profile, params.get("base_model", "tiny"), params.get("tiny_model"))  # as 03
    if episode_format:
        use_training_template(base.tokenizer)
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=SEED_TARGET_MODULES,
                        task_type="CAUSAL_LM")
    model = get_peft_model(base.model, config)
    model.train()
    chats = data["messages"][:args.records] if episode_format else [p + c for p, c in
                                                                     zip(data["prompt"], data["completion"])][:args.records]
    batches = [torch.tensor([base.tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]])
               for chat in chats]
    tokens = sum(b.shape[1] for b in batches)
    variants = {"PEFT's dropout (torch.nn.Dropout)": lambda: torch.nn.Dropout(0.05),
                "Int16Dropout (what 03 uses on a CPU)": lambda: Int16Dropout(0.05),
                "no dropout (a lower bound)": torch.nn.Identity}
    layers = [m.lora_dropout for m in model.modules() if isinstance(getattr(m, "lora_dropout", None),
                                                                    torch.nn.ModuleDict)]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    torch.manual_seed(0)
    for round_ in range(args.rounds + 1):
        for name, make in variants.items():
            for dropouts in layers:
                dropouts["default"] = make()
            started = time.perf_counter()
            for ids in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=plan.bf16):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                model.zero_grad(set_to_none=True)
            if round_:  # the first round warms up
                seconds[name].append(time.perf_counter() - started)
    print(f"{args.profile}: {len(batches)} records, {tokens} tokens per round, {args.rounds} rounds, "
          f"{len(layers)} LoRA layers, {plan.describe()}")
    reference = statistics.median(seconds["PEFT's dropout (torch.nn.Dropout)"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:40s} {tokens / median:6.0f} tokens/s  ({median / reference:.2f}x the time of PEFT's)")


if __name__ == "__main__":
    main()
