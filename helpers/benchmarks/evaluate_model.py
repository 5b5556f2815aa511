"""Benchmark: one trained model of a profile on one split, scored by the same harness as 06, and printed.

For trying a training setting without a whole run: train with the pipeline (`--only 02 --set ...`), then
`python -m helpers.benchmarks.evaluate_model --profile cpu-smollm2 --model sft_full`. The model acts greedily with
the profile's step limit, reply length, batch size and prompt format, on this machine's device plan (bf16 on a
CPU that computes it natively). Nothing is written to results/: the evaluation files of a whole run stay as they are.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full", help="a folder of results/<profile>/models/, e.g. lora_merged")
    parser.add_argument("--split", default="test_normal")
    args = parser.parse_args()

    from helpers.agent import ModelPolicy
    from helpers.backends import TransformersBackend
    from helpers.devices import device_plan
    from helpers.evaluation import evaluate
    from helpers.model_format import format_for
    from helpers.models import load_trained, models_dir
    from helpers.paths import profile_data_dir
    from helpers.profiles import load_profile
    from helpers.prompts import PromptFormat
    from helpers.tasks import load_tasks

    params = load_profile(args.profile)
    path = models_dir(args.profile) / args.model
    prompt_format = format_for(path, PromptFormat.from_profile(params))
    model, tokenizer = load_trained(path, device_plan())
    tasks = load_tasks(profile_data_dir(args.profile) / "tasks" / f"{args.split}.jsonl")
    backend = TransformersBackend(model, tokenizer, args.model, params["max_new_tokens"], params["eval_batch_size"])
    started = time.perf_counter()
    evaluation = evaluate(tasks, ModelPolicy(backend, prompt_format, name=args.model), args.split,
                          max_steps=params["max_steps"], batch_size=params["eval_batch_size"], seed=params["seed"])
    print(f"{args.model} on {args.split}: {time.perf_counter() - started:.0f} s")
    print(evaluation.summary)
    print(evaluation.per_task.groupby("scenario")["success"].mean().mul(100).round(1).to_string())
    # how many steps the completed tasks took: what a lower `max_steps` would cost
    done = evaluation.per_task[evaluation.per_task["success"]]
    print("steps of the completed tasks:", done["steps"].value_counts().sort_index().to_dict())


if __name__ == "__main__":
    main()
