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


class ModelScorer:
    """A trained model of a profile, loaded once, scored on task splits and on 06's chats as 06 scores it."""

    def __init__(self, profile: str, model: str, fixed: bool = False):
        from helpers.agent.model_format import format_for
        from helpers.agent.prompts import PromptFormat
        from helpers.course.profiles import load_profile
        from helpers.devices import device_plan
        from helpers.training.models import load_trained, models_dir

        self.profile, self.name, self.fixed = profile, model, fixed
        self.params = load_profile(profile)
        path = models_dir(profile) / model
        self.prompt_format = format_for(path, PromptFormat.from_profile(self.params))
        self.model, self.tokenizer = load_trained(path, device_plan())

    def backend(self, max_new_tokens: int):
        from helpers.agent.backends import TransformersBackend
        from helpers.benchmarks.decoding import fixed_drafts

        backend = TransformersBackend(self.model, self.tokenizer, self.name, max_new_tokens,
                                      self.params["eval_batch_size"])
        return fixed_drafts(backend) if self.fixed else backend

    def split(self, split: str):
        """The harness's `Evaluation` of `split` (greedy, the profile's step limit and seed)."""
        from helpers.agent.policy import ModelPolicy
        from helpers.harness.evaluate import evaluate
        from helpers.paths import profile_data_dir
        from helpers.tasks import load_tasks

        tasks = load_tasks(profile_data_dir(self.profile) / "tasks" / f"{split}.jsonl")
        policy = ModelPolicy(self.backend(self.params["max_new_tokens"]), self.prompt_format, name=self.name)
        return evaluate(tasks, policy, split, max_steps=self.params["max_steps"],
                        batch_size=self.params["eval_batch_size"], seed=self.params["seed"])

    def chats(self) -> list:
        """06's chat cases played with the simulated user: one `ChatOutcome` each."""
        from helpers.course.pipeline import DEFAULT_PROFILE
        from helpers.course.profiles import load_profile
        from helpers.evaluation.chats import chat_cases, play_chats

        # a profile without the chat settings runs 06 with its defaults, which are the default profile's
        chat = {**load_profile(DEFAULT_PROFILE), **self.params}
        return play_chats(chat_cases(chat["chat_case_count"], seed=1000 + self.params["seed"]),
                          self.backend(chat["chat_max_new_tokens"]), batch_size=self.params["eval_batch_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full", help="a folder of results/<profile>/models/, e.g. lora_merged")
    parser.add_argument("--split", default="test_normal", help="a task split, or none")
    parser.add_argument("--chats", action="store_true", help="also play the chats of 06 (chat_case_count cases)")
    parser.add_argument("--fixed-drafts", action="store_true",
                        help="every greedy row proposes the full draft (the decoder before drafts by acceptance)")
    args = parser.parse_args()

    from helpers.evaluation.chats import summarize_chats

    scorer = ModelScorer(args.profile, args.model, args.fixed_drafts)
    if args.split != "none":
        started = time.perf_counter()
        evaluation = scorer.split(args.split)
        print(f"{args.model} on {args.split}: {time.perf_counter() - started:.0f} s")
        print(evaluation.summary)
        print(evaluation.per_task.groupby("scenario")["success"].mean().mul(100).round(1).to_string())
        # how many steps the completed tasks took: what a lower `max_steps` would cost
        done = evaluation.per_task[evaluation.per_task["success"]]
        print("steps of the completed tasks:", done["steps"].value_counts().sort_index().to_dict())
    if args.chats:
        started = time.perf_counter()
        outcomes = scorer.chats()
        print(f"{args.model} chats: {time.perf_counter() - started:.0f} s", summarize_chats(outcomes))
        for outcome in outcomes:  # which chats succeed: those that lack a detail are the ones to ask in
            print(f"  {outcome.case_id}: {'ok ' if outcome.success else 'bad'} missing={','.join(outcome.missing) or '-'}"
                  f" assistant_turns={outcome.assistant_turns} ended={outcome.ended}")


if __name__ == "__main__":
    main()
