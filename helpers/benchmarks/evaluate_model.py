"""Benchmark: one trained model of a profile on one split, scored by the same harness as 06, and printed.

For trying a training setting without a whole run: train with the pipeline (`--only 02 --set ...`), then
`python -m helpers.benchmarks.evaluate_model --profile cpu-smollm2 --model sft_full` (`--chats` also plays
the profile's simulated-user chats, `--split none` only those). The model acts greedily with
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
    parser.add_argument("--split", default="test_normal", help="a task split, or none")
    parser.add_argument("--chats", action="store_true", help="also play the chats of 06 (chat_case_count cases)")
    parser.add_argument("--fixed-drafts", action="store_true",
                        help="every greedy row proposes the full draft (the decoder before drafts by acceptance)")
    args = parser.parse_args()

    from helpers.agent.backends import TransformersBackend
    from helpers.agent.model_format import format_for
    from helpers.agent.policy import ModelPolicy
    from helpers.agent.prompts import PromptFormat
    from helpers.benchmarks.decoding import fixed_drafts
    from helpers.course.pipeline import DEFAULT_PROFILE
    from helpers.course.profiles import load_profile
    from helpers.devices import device_plan
    from helpers.evaluation.chats import chat_cases, play_chats, summarize_chats
    from helpers.harness.evaluate import evaluate
    from helpers.paths import profile_data_dir
    from helpers.tasks import load_tasks
    from helpers.training.models import load_trained, models_dir

    params = load_profile(args.profile)
    path = models_dir(args.profile) / args.model
    prompt_format = format_for(path, PromptFormat.from_profile(params))
    model, tokenizer = load_trained(path, device_plan())
    def make_backend(max_new_tokens: int) -> TransformersBackend:
        backend = TransformersBackend(model, tokenizer, args.model, max_new_tokens, params["eval_batch_size"])
        return fixed_drafts(backend) if args.fixed_drafts else backend

    backend = make_backend(params["max_new_tokens"])
    if args.split != "none":
        tasks = load_tasks(profile_data_dir(args.profile) / "tasks" / f"{args.split}.jsonl")
        started = time.perf_counter()
        evaluation = evaluate(tasks, ModelPolicy(backend, prompt_format, name=args.model), args.split,
                              max_steps=params["max_steps"], batch_size=params["eval_batch_size"], seed=params["seed"])
        print(f"{args.model} on {args.split}: {time.perf_counter() - started:.0f} s")
        print(evaluation.summary)
        print(evaluation.per_task.groupby("scenario")["success"].mean().mul(100).round(1).to_string())
        # how many steps the completed tasks took: what a lower `max_steps` would cost
        done = evaluation.per_task[evaluation.per_task["success"]]
        print("steps of the completed tasks:", done["steps"].value_counts().sort_index().to_dict())
    if args.chats:
        started = time.perf_counter()
        # a profile without the chat settings runs 06 with its defaults, which are the default profile's
        chat = {**load_profile(DEFAULT_PROFILE), **params}
        outcomes = play_chats(chat_cases(chat["chat_case_count"], seed=1000 + params["seed"]),
                              make_backend(chat["chat_max_new_tokens"]),
                              batch_size=params["eval_batch_size"])
        print(f"{args.model} chats: {time.perf_counter() - started:.0f} s", summarize_chats(outcomes))
        for outcome in outcomes:  # which chats succeed: those that lack a detail are the ones to ask in
            print(f"  {outcome.case_id}: {'ok ' if outcome.success else 'bad'} missing={','.join(outcome.missing) or '-'}"
                  f" assistant_turns={outcome.assistant_turns} ended={outcome.ended}")


if __name__ == "__main__":
    main()
