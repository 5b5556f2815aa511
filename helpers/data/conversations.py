"""Multi-turn conversations: a user who leaves details out, an assistant that asks, acts in code and confirms.

Every conversation is verified: its code runs in the sandbox against a world where the person
exists, and the resulting world must pass the checks of the request (right person, amount and note,
nothing else changed).
"""
from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from typing import Iterator

from helpers.agent.chat_protocol import CHAT_SYSTEM_PROMPT, chat_action, chat_confirmation, chat_question
from helpers.agent.prompts import format_completion
from helpers.agent.simulated_user import SimulatedUser, UserGoal
from helpers.data.queries import DEFAULT_RECIPIENTS, PaymentQuery, Recipient, generate_queries
from helpers.harness.episode import Environment
from helpers.tasks.grading import grade
from helpers.tasks.people import NOTES
from helpers.tasks.schema import NoOtherChanges, PaymentRequestMade, Task, TransactionMade
from helpers.tasks.worlds import WorldBuilder, random_amount
from helpers.world.state import Contact, WorldState


def _ascii(name: str) -> str:
    """Emails keep to lower-case ASCII letters: José O'Brien -> jose, obrien."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def conversation_world(rng: random.Random, recipients: list[Recipient]) -> WorldState:
    """A world whose contacts are exactly these people (nicknames and phone numbers included)."""
    builder = WorldBuilder(rng, "seen", contact_count=5, card_count=1, history=0, balance=5000.0)
    contacts = []
    for number, person in enumerate(recipients, start=1):
        first, _, last = person.full_name.partition(" ")
        email = f"{_ascii(first)}.{_ascii(last)}@example.com"
        contacts.append(Contact(contact_id=number, first_name=first, last_name=last, email=email,
                                phone_number=person.phone_number or f"555-555-{number:04d}", nickname=person.nickname))
    state = builder.build()
    users = [state.supervisor, *contacts]
    return state.model_copy(update={"contacts": contacts, "wallet": state.wallet.model_copy(update={"users": users})})


@dataclass
class BuiltConversation:
    record: dict
    task: Task  # the request as a graded task, used to verify the conversation


def request_task(goal: UserGoal, world: WorldState, conversation_id: str) -> Task:
    """The user's full request as a task: the right change and nothing else."""
    email = next(c.email for c in world.contacts if f"{c.first_name} {c.last_name}" == goal.recipient)
    check = (TransactionMade(receiver_email=email, amount=goal.amount, description_contains=goal.note)
             if goal.intent == "send_money"
             else PaymentRequestMade(payer_email=email, amount=goal.amount, description_contains=goal.note))
    return Task(id=f"{conversation_id}_1", scenario_id=conversation_id, scenario=f"chat_{goal.intent}", difficulty=1,
                instruction="(conversation)", world=world, checks=[check, NoOtherChanges()],
                slots={"intent": goal.intent, "recipient": goal.recipient})


def build_conversation(query: PaymentQuery, world: WorldState, rng: random.Random,
                       conversation_id: str) -> BuiltConversation | None:
    """Play one conversation from an utterance; None if the result fails verification."""
    if query.recipient is None:  # the user has someone in mind and names them when asked
        contact = rng.choice(world.contacts)
        recipient = f"{contact.first_name} {contact.last_name}"
        recipient_text = rng.choice((recipient, contact.first_name))
    else:
        recipient, recipient_text = query.recipient, query.recipient_text
    goal = UserGoal(intent=query.intent, recipient=recipient, recipient_text=recipient_text,
                    amount=query.amount if query.amount is not None else random_amount(rng),
                    note=query.note or rng.choice(NOTES))
    user = SimulatedUser(goal, rng)
    messages = [{"role": "system", "content": CHAT_SYSTEM_PROMPT}, {"role": "user", "content": query.text}]
    known = {"recipient_text": None if "recipient" in query.missing else goal.recipient_text,
             "amount": None if "amount" in query.missing else goal.amount,
             "note": None if "note" in query.missing else goal.note}
    for slot in ("recipient", "amount", "note"):
        if slot in query.missing:
            question = chat_question(slot, goal.intent, known)
            messages.append({"role": "assistant", "content": question})
            messages.append({"role": "user", "content": user.answer(question)})
            known["recipient_text" if slot == "recipient" else slot] = getattr(
                goal, "recipient_text" if slot == "recipient" else slot)
    thought, code = chat_action(goal)
    task = request_task(goal, world, conversation_id)
    with Environment(task) as env:
        step = env.execute(code)
        result = env.grade()
    if not step.ok or not result.success:
        return None
    messages += [{"role": "assistant", "content": format_completion(thought, code)},
                 {"role": "tool", "content": step.observation},
                 {"role": "assistant", "content": chat_confirmation(goal)}]
    record = {"messages": messages, "conversation_id": conversation_id, "intent": goal.intent,
              "missing": list(query.missing), "recipient_ref": query.recipient_ref,
              "user_turns": sum(m["role"] == "user" for m in messages)}
    return BuiltConversation(record, task)


def build_conversations(count: int, seed: int = 0, people_per_world: int = 8,
                        missing_rate: float = 0.4) -> Iterator[BuiltConversation]:
    """`count` verified conversations from generated utterances; a new small world every few of them."""
    rng = random.Random(seed)
    made, attempt = 0, 0
    while made < count:
        people = rng.sample(list(DEFAULT_RECIPIENTS), people_per_world)
        world = conversation_world(rng, people)
        queries = generate_queries(n=12, seed=rng.randrange(2**31), recipients=people, missing_rate=missing_rate)
        for query in queries:
            attempt += 1
            built = build_conversation(query, world, rng, f"chat{seed}-{attempt:05d}")
            if built is not None:
                made += 1
                yield built
                if made >= count:
                    return
        if attempt > count * 4 + 100:
            raise RuntimeError(f"only {made} of {count} conversations passed verification")
