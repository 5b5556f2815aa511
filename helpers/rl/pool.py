"""What GRPO's rollouts play: fresh tasks of the training types phrased the way people write, and chats.

An episode item is a new scenario of a training type (names from the training pool, a new world) whose
instruction takes one of the type's training or rollout-only phrasings and then the liberties people take:
amounts as "a tenner" or "seventy-five dollars", a first name instead of the full name, a typo, all in lower
case. No held-out phrasing is used (`tests/test_rl_pool.py` checks it). A chat item is a conversation with
the simulated user built from seeds that neither the training chats nor the held-out chats use.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Callable

from helpers.agent.chat_protocol import CHAT_SYSTEM_PROMPT
from helpers.agent.prompts import PromptFormat, build_prompt
from helpers.data.queries import misspell, render_amount
from helpers.evaluation.chats import ChatCase, chat_cases
from helpers.tasks.scenarios import SCENARIO_TYPES, TRAIN_TYPES
from helpers.tasks.schema import Task

# held-out chats use seed 1000 + the profile's seed (05/06) and training chats the profile's seed (01)
CHAT_POOL_SEED_OFFSET = 2000
_FIELD = re.compile(r"(\$?\{\w+\})")
_WORD = re.compile(r"[A-Za-z]{4,}")


@dataclass(frozen=True)
class RolloutItem:
    """One thing a rollout plays: a task in the agent's episode layout, or a chat with the simulated user."""

    key: str  # the prompt's messages as JSON: how the rollout function finds the item of a prompt
    kind: str  # "episode" | "chat"
    task: Task
    messages: tuple[dict, ...]
    case: ChatCase | None = None
    phrasing: str = ""  # an episode's template, before its fields and liberties

    @property
    def prompt(self) -> list[dict]:
        return [dict(m) for m in self.messages]


def prompt_key(messages) -> str:
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)


@dataclass(frozen=True)
class Liberties:
    """How often an instruction departs from its written phrasing, each independently."""

    spoken_amount: float = 0.6  # the amount as render_amount says it, not "$25"
    first_name: float = 0.4  # "Ann" for "Ann Lee"
    typo: float = 0.15
    lower_case: float = 0.15


def phrase(template: str, fields: dict, rng: random.Random, liberties: Liberties = Liberties()) -> str:
    """Fill a phrasing's fields, taking the liberties people take; the values keep their meaning."""
    values = dict(fields)
    if "amount" in values and rng.random() < liberties.spoken_amount:
        values["$amount"] = render_amount(float(values["amount"]), rng)
    else:
        values["$amount"] = "$" + values["amount"] if "amount" in values else None
    if "first" in values and rng.random() < liberties.first_name:
        values["name"] = values["first"]
    parts = []
    for part in _FIELD.split(template):
        field = _FIELD.fullmatch(part)
        if field:
            name = part.strip("{}") if not part.startswith("$") else "$" + part[2:-1]
            parts.append(("value", str(values[name])))
        elif part:
            parts.append(("text", part))
    if rng.random() < liberties.typo:
        spots = [(i, m.start(), m.end()) for i, (kind, text) in enumerate(parts) if kind == "text"
                 for m in _WORD.finditer(text)]
        if spots:
            i, start, end = rng.choice(spots)
            text = parts[i][1]
            parts[i] = ("text", text[:start] + misspell(text[start:end], rng) + text[end:])
    sentence = "".join(text for _, text in parts)
    return sentence.lower() if rng.random() < liberties.lower_case else sentence


def episode_items(count: int, seed: int, prompt_format: PromptFormat, types: tuple[str, ...] = TRAIN_TYPES,
                  liberties: Liberties = Liberties()) -> list[RolloutItem]:
    """`count` fresh tasks, the types in turn, each with its own world and a distinct instruction."""
    rng = random.Random(f"rollout-episodes:{seed}")
    items, seen = [], set()
    attempt = 0
    while len(items) < count:
        if attempt > 20 * count + 100:
            raise RuntimeError(f"only {len(items)} distinct rollout tasks of {count}")
        type_name = types[len(items) % len(types)]
        kind = SCENARIO_TYPES[type_name]
        built = kind.build(random.Random(f"rollout:{seed}:{attempt}"), "seen")
        template = rng.choice(kind.rollout + kind.templates)
        instruction = phrase(template, built.fields, rng, liberties)
        attempt += 1
        if instruction in seen:
            continue
        seen.add(instruction)
        scenario = f"rollout{seed}-{attempt:05d}"
        task = Task(id=f"{scenario}_1", scenario_id=scenario, scenario=type_name, difficulty=kind.difficulty,
                    instruction=instruction, world=built.world, checks=built.checks, slots=built.slots)
        messages = tuple(build_prompt(instruction, [], prompt_format))
        items.append(RolloutItem(prompt_key(messages), "episode", task, messages, phrasing=template))
    return items


def chat_items(count: int, seed: int) -> list[RolloutItem]:
    """`count` conversations with the simulated user, from seeds no training or held-out chat uses."""
    items = []
    for case in chat_cases(count, seed=CHAT_POOL_SEED_OFFSET + seed):
        messages = ({"role": "system", "content": CHAT_SYSTEM_PROMPT}, {"role": "user", "content": case.opening})
        items.append(RolloutItem(prompt_key(messages), "chat", case.task, messages, case))
    return items


class RolloutPool:
    """Items drawn without replacement (then reshuffled), for replacing groups that teach nothing."""

    def __init__(self, items: list[RolloutItem], seed: int = 0):
        if not items:
            raise ValueError("A rollout pool needs at least one item.")
        self.items = list(items)
        self.by_key = {item.key: item for item in items}
        self._rng = random.Random(f"rollout-pool:{seed}")
        self._queue: list[RolloutItem] = []

    def draw(self, kind: str | None = None, rank: Callable[[RolloutItem], float] | None = None,
             candidates: int = 1) -> RolloutItem:
        """The next item (of `kind`, if given); with `rank`, the best-ranked of the next `candidates` such items,
        the others staying in the queue for later draws."""
        for _ in range(2):
            indices = [i for i, item in enumerate(self._queue) if kind is None or item.kind == kind][:candidates]
            if indices:
                best = max(indices, key=lambda i: rank(self._queue[i])) if rank and len(indices) > 1 else indices[0]
                return self._queue.pop(best)
            self._queue = list(self.items)
            self._rng.shuffle(self._queue)
        raise ValueError(f"The rollout pool has no {kind} item.")


def item_family(item: RolloutItem) -> str:
    """Items whose groups tend to teach alike: a task type, or a chat with or without a missing detail."""
    if item.kind == "chat":
        return "chat, detail missing" if item.case and item.case.missing else "chat, complete"
    return item.task.scenario


class GroupRecord:
    """Which families of items gave groups whose rewards differ (the only groups with a gradient).

    A model that already solves a task type every time, or never, plays groups that all score the same; spare
    groups are better spent on the families that still split. `rank` draws each family's chance of a split group
    from its Beta posterior (Thompson sampling), so a family not yet seen, or seen rarely, is still tried.
    """

    def __init__(self, seed: int = 0):
        self.mixed: dict[str, int] = {}
        self.alike: dict[str, int] = {}
        self._rng = random.Random(f"group-record:{seed}")

    def add(self, item: RolloutItem, differs: bool) -> None:
        counts = self.mixed if differs else self.alike
        family = item_family(item)
        counts[family] = counts.get(family, 0) + 1

    def rank(self, item: RolloutItem) -> float:
        family = item_family(item)
        return self._rng.betavariate(1 + self.mixed.get(family, 0), 1 + self.alike.get(family, 0))

    def table(self) -> dict[str, tuple[int, int]]:
        """Per family: (groups whose rewards differed, groups all alike)."""
        return {f: (self.mixed.get(f, 0), self.alike.get(f, 0)) for f in sorted({*self.mixed, *self.alike})}


def step_order(items: list[RolloutItem], groups_per_step: int, chat_groups: int | None,
               seed: int = 0) -> list[RolloutItem]:
    """The pool in the order the steps play it, for TRL's sampler without shuffling (`shuffle_dataset=False`).

    Every run of `groups_per_step` items holds `chat_groups` chats and the rest tasks, so every step plays the
    same mix and the reward curve compares like with like (drawn at random, a step of only chats scores
    differently from one of only tasks, whatever the policy learned). The kind with fewer items comes round
    again sooner. `chat_groups=None` keeps the pool as it is, for TRL to shuffle.
    """
    if chat_groups is None:
        return list(items)
    chats = [i for i in items if i.kind == "chat"]
    episodes = [i for i in items if i.kind == "episode"]
    task_groups = groups_per_step - chat_groups
    if not 0 <= chat_groups <= groups_per_step:
        raise ValueError(f"grpo_chat_groups is {chat_groups}: set it between 0 and grpo_prompts_per_step "
                         f"({groups_per_step}), or to None for steps drawn at random.")
    if (chat_groups and not chats) or (task_groups and not episodes):
        raise ValueError(f"grpo_chat_groups={chat_groups} of {groups_per_step} needs "
                         f"{'chats (grpo_pool_chats)' if chat_groups and not chats else 'tasks (grpo_pool_episodes)'}"
                         " in the rollout pool: add some, or change grpo_chat_groups.")
    rng = random.Random(f"step-order:{seed}")
    rng.shuffle(chats)
    rng.shuffle(episodes)
    steps = max(-(-len(chats) // chat_groups) if chat_groups else 0,
                -(-len(episodes) // task_groups) if task_groups else 0)
    order = []
    for step in range(steps):
        order += [chats[(step * chat_groups + k) % len(chats)] for k in range(chat_groups)]
        order += [episodes[(step * task_groups + k) % len(episodes)] for k in range(task_groups)]
    return order
