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
from helpers.rl.pool import (GroupRecord, Liberties, RolloutPool, chat_items, episode_items, item_family, phrase,
                             step_order)
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


def test_a_ranked_draw_takes_the_best_of_the_next_candidates_and_leaves_the_rest(items):
    pool = RolloutPool(items, seed=3)
    plain = RolloutPool(items, seed=3)
    queue = [plain.draw() for _ in range(4)]  # the same seed shuffles the same way
    rank = lambda item: 1.0 if item.key == queue[2].key else 0.0  # noqa: E731
    assert pool.draw(rank=rank, candidates=3) is queue[2]
    assert [pool.draw() for _ in range(2)] == queue[:2]  # the passed-over candidates come next, in order
    assert pool.draw(rank=rank, candidates=1) is queue[3]  # one candidate: the plain next item


def test_the_group_record_sends_spares_to_the_families_that_still_split(items):
    record = GroupRecord(seed=0)
    solved, learning = items[0], items[1]  # two task types
    assert item_family(solved) != item_family(learning)
    for _ in range(6):
        record.add(solved, differs=False)
        record.add(learning, differs=True)
    assert record.table() == {item_family(learning): (6, 0), item_family(solved): (0, 6)}
    wins = sum(record.rank(learning) > record.rank(solved) for _ in range(200))
    assert wins > 190  # Beta(7, 1) against Beta(1, 7)
    unseen = next(i for i in items if item_family(i) not in record.table())
    assert 40 < sum(record.rank(unseen) > record.rank(solved) for _ in range(100)) < 100  # still tried, not always


def test_chats_are_two_families_by_whether_a_detail_is_missing():
    chats = chat_items(24, seed=0)
    assert {item_family(c) for c in chats} == {"chat, detail missing", "chat, complete"}
    assert all((item_family(c) == "chat, detail missing") == bool(c.case.missing) for c in chats)
