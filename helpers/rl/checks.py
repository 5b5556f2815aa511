"""Before and after GRPO: greedy rollouts on items no training rollout plays, as a table of outcomes and rewards."""
from __future__ import annotations

import pandas as pd
import torch

from helpers.agent.prompts import PromptFormat
from helpers.rl.pool import RolloutItem, chat_items, episode_items
from helpers.rl.rewards import OUTCOME_REWARDS, RewardWeights, total_reward
from helpers.rl.rollouts import RolloutSettings, local_sampler, play

# seeds of the check items: the rollout pool uses the profile's seed, held-out chats 1000 + it
CHECK_SEED_OFFSET = 1000


def check_items(episodes: int, chats: int, seed: int, prompt_format: PromptFormat) -> list[RolloutItem]:
    """Fresh tasks of the training types phrased as people write, and chats, from seeds the pool never uses."""
    return (episode_items(episodes, seed + CHECK_SEED_OFFSET, prompt_format)
            + (chat_items(chats, seed + CHECK_SEED_OFFSET) if chats else []))


@torch.no_grad()
def greedy_outcomes(model, tokenizer, items: list[RolloutItem], settings: RolloutSettings,
                    weights: RewardWeights = RewardWeights(), dtype: torch.dtype | None = None) -> pd.DataFrame:
    """One greedy rollout per item: a row each with the outcome, every reward and their weighted total."""
    rollouts = play(items, local_sampler(model, tokenizer, temperature=0.0, dtype=dtype), tokenizer, settings)
    outcomes = [r.outcome.as_dict() for r in rollouts]
    table = pd.DataFrame(outcomes)
    table.insert(0, "request", [r.item.task.instruction if r.item.kind == "episode" else r.item.case.opening
                                for r in rollouts])
    for reward in OUTCOME_REWARDS:
        table[reward.__name__] = reward(outcome=outcomes)
    table["total"] = total_reward(outcomes, weights)
    table["first_reply"] = [r.replies[0] if r.replies else "" for r in rollouts]
    return table


def summary(table: pd.DataFrame, label: str) -> pd.Series:
    """Success, reward and, for chats lacking a detail, how often the model asked, per kind of item."""
    rows = {}
    for kind, group in table.groupby("kind"):
        rows[f"{kind} success %"] = 100 * group["success"].mean()
        rows[f"{kind} reward"] = group["total"].mean()
    gaps = table[(table["kind"] == "chat") & (table["missing"] > 0)]
    if len(gaps):
        rows["chat asked when a detail was missing %"] = 100 * gaps["asked"].mean()
    return pd.Series(rows, name=label)


# Requests as a new user types them, each a training type in words no training, rollout or test phrasing
# uses; `needs` says which generated scenarios the words fit (a tenner is $10).
SHOWCASE = (
    ("send_by_name", "send a tenner to {first}", lambda f: f.get("amount") == "10"),
    ("send_private", "privately send {amount_words} dollars to {name} for {note}", lambda f: True),
    ("deny_request", "Decline whatever {first} is requesting.", lambda f: True),
    ("send_from_card", "put {amount_words} bucks for {first} on my card ending {last4}", lambda f: True),
    ("request_money", "{first} owes me ${amount} for {note} - ask them for it", lambda f: True),
    ("approve_request", "ok, pay whatever {first} asked me for", lambda f: True),
    ("add_balance", "move {amount_words} dollars off the card ending in {last4} into my wallet", lambda f: True),
    ("answer_last_sent", "remind me what I sent {first} last time?", lambda f: True),
)


def showcase_items(prompt_format: PromptFormat, seed: int = 0) -> list[RolloutItem]:
    """One task for each SHOWCASE request, in a world of its own (names from the training pool)."""
    import random

    from helpers.agent.prompts import build_prompt
    from helpers.data.queries import number_to_words
    from helpers.rl.pool import prompt_key
    from helpers.tasks.scenarios import SCENARIO_TYPES
    from helpers.tasks.schema import Task

    items = []
    for number, (type_name, template, needs) in enumerate(SHOWCASE):
        kind = SCENARIO_TYPES[type_name]
        for attempt in range(5000):
            built = kind.build(random.Random(f"showcase:{seed}:{number}:{attempt}"), "seen")
            amount = float(built.fields.get("amount", "0"))
            if needs(built.fields) and amount.is_integer():
                break
        fields = {**built.fields, "amount_words": number_to_words(int(amount))}
        instruction = template.format(**fields)
        task = Task(id=f"showcase{seed}-{number:02d}_1", scenario_id=f"showcase{seed}-{number:02d}",
                    scenario=type_name, difficulty=kind.difficulty, instruction=instruction, world=built.world,
                    checks=built.checks, slots=built.slots)
        messages = tuple(build_prompt(instruction, [], prompt_format))
        items.append(RolloutItem(prompt_key(messages), "episode", task, messages, phrasing=template))
    return items
