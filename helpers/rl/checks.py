"""Before and after GRPO: greedy rollouts on items no training rollout plays, as a table of outcomes and rewards."""
from __future__ import annotations

import pandas as pd
import torch

from helpers.agent.decoding import Decoder, TokenText
from helpers.agent.prompts import PromptFormat
from helpers.rl.pool import RolloutItem, chat_items, episode_items
from helpers.rl.rewards import OUTCOME_REWARDS, RewardWeights, total_reward
from helpers.rl.rollouts import DecoderSampler, RolloutSettings, play

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
    decoder = Decoder(model, [tokenizer.eos_token_id], dtype=dtype, token_text=TokenText(tokenizer))
    rollouts = play(items, DecoderSampler(decoder, temperature=0.0), tokenizer, settings)
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
