"""The rollout pool: fresh requests of the training types, never a held-out phrasing, every one solvable."""
import re

import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.agent.prompts import PromptFormat
from helpers.data.conversations import build_conversations
from helpers.data.queries import parse_amount
from helpers.evaluation.chats import chat_cases
from helpers.harness.episode import run_episodes
from helpers.rl.checks import check_items
from helpers.rl.pool import Liberties, RolloutPool, chat_items, episode_items, phrase, step_order
from helpers.tasks import build_split
from helpers.tasks.scenarios import SCENARIO_TYPES, TRAIN_TYPES

FORMAT = PromptFormat("episode", observation_chars=300)


def fits(template: str, instruction: str) -> bool:
    """Whether `instruction` reads as `template` with its fields filled (any case, any values)."""
    pattern = re.sub(r"\\\$?\\\{\w+\\\}", ".+", re.escape(template))
    return re.fullmatch(pattern, instruction, re.IGNORECASE) is not None


@pytest.fixture(scope="module")
def items():
    return episode_items(4 * len(TRAIN_TYPES), seed=0, prompt_format=FORMAT)


def test_rollout_phrasings_are_their_own(items):
    for name in TRAIN_TYPES:
        kind = SCENARIO_TYPES[name]
        assert kind.rollout and set(kind.rollout).isdisjoint(kind.templates + kind.held_out), name
    assert {i.task.scenario for i in items} == set(TRAIN_TYPES)
    assert any(i.phrasing in SCENARIO_TYPES[i.task.scenario].rollout for i in items)


def test_no_rollout_or_check_request_reads_as_a_held_out_phrasing(items):
    held_out = [t for name in TRAIN_TYPES for t in SCENARIO_TYPES[name].held_out]
    checks = [i for i in check_items(2 * len(TRAIN_TYPES), 0, seed=0, prompt_format=FORMAT)]
    tests = {t.instruction for t in build_split("test_normal", 1)}
    for item in items + checks:
        assert item.phrasing not in held_out
        assert not any(fits(t, item.task.instruction) for t in held_out), item.task.instruction
        assert item.task.instruction not in tests


def test_the_expert_solves_every_rollout_task(items):
    episodes = run_episodes([i.task for i in items], ExpertPolicy(), max_steps=12)
    assert [e.task.id for e in episodes if not e.result.success] == []


def test_liberties_keep_the_values():
    import random

    fields = {"name": "Ann Lee", "first": "Ann", "amount": "75", "note": "lunch"}
    rng = random.Random(0)
    for _ in range(200):
        sentence = phrase("Send ${amount} to {name} for {note}.", fields, rng, Liberties(typo=0.0))
        low = sentence.lower()
        assert "ann" in low and "lunch" in low
        words = re.sub(r"^send | to ann.*$", "", low)
        assert parse_amount(words) == 75.0, sentence
    spoken = {phrase("Pay ${amount}", fields, random.Random(i), Liberties(spoken_amount=1.0)) for i in range(50)}
    assert len(spoken) > 3  # "$75", "75 bucks", "seventy-five dollars", ...


def test_pool_chats_are_neither_training_nor_held_out_chats():
    pool = {i.case.opening for i in chat_items(30, seed=0)}
    checks = {i.case.opening for i in check_items(0, 30, seed=0, prompt_format=FORMAT)}
    held_out = {c.opening for c in chat_cases(30, seed=1000)}
    training = {b.record["messages"][1]["content"] for b in build_conversations(60, seed=0)}
    assert pool and checks
    assert pool.isdisjoint(held_out | training | checks) and checks.isdisjoint(held_out | training)


def test_the_pool_draws_every_item_before_repeating_and_by_kind(items):
    chats = chat_items(2, seed=0)
    pool = RolloutPool(items[:3] + chats, seed=1)
    drawn = [pool.draw().key for _ in range(5)]
    assert sorted(drawn) == sorted(i.key for i in items[:3] + chats)
    assert pool.draw("chat").kind == "chat"


def test_step_order_gives_every_step_the_same_mix_through_trls_sampler(items):
    from trl.trainer.utils import RepeatSampler

    chats = chat_items(5, seed=0)
    ordered = step_order(items + chats, groups_per_step=3, chat_groups=1, seed=0)
    assert {i.key for i in ordered} == {i.key for i in items + chats}  # nothing left out
    # as GRPOTrainer samples with shuffle_dataset=False: each prompt 4 times, 3 prompts per generation batch
    sampler = RepeatSampler(ordered, mini_repeat_count=4, batch_size=3, repeat_count=3, shuffle=False)
    indexes = list(sampler)
    batches = [indexes[i:i + 12] for i in range(0, len(indexes), 12)]
    assert len(batches) >= len(items) // 2
    for batch in batches:
        kinds = [ordered[k].kind for k in batch[::4]]
        assert sorted(kinds) == ["chat", "episode", "episode"], kinds
    assert step_order(items + chats, 3, None) == items + chats  # None: TRL shuffles the pool as it is
    with pytest.raises(ValueError, match="grpo_pool_chats"):
        step_order(items, 3, 1)
    with pytest.raises(ValueError, match="between 0 and"):
        step_order(items + chats, 3, 4)
