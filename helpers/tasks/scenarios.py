"""The scenario types: each builds a world, the instruction's values and the checks for one variant.

A scenario type has phrasings seen in training, phrasings held out for `test_normal`, and phrasings kept
for reinforcement-learning rollouts only (`rollout`), which no split and no expert episode uses.
`slots` is the request stated by the instruction, as data, for the scripted expert.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from helpers.tasks.people import NOTES
from helpers.tasks.schema import (
    AnswerIs, BalanceAdded, NoOtherChanges, PaymentRequestMade, RequestStatus, StatusIs, TransactionMade,
)
from helpers.tasks.worlds import WorldBuilder, format_amount, random_amount
from helpers.world.state import WorldState


@dataclass
class Variant:
    world: WorldState
    fields: dict
    slots: dict
    checks: list


@dataclass(frozen=True)
class ScenarioType:
    name: str
    difficulty: int
    templates: tuple[str, ...]
    held_out: tuple[str, ...]
    build: Callable[[random.Random, str], Variant]
    rollout: tuple[str, ...] = ()


def _builder(rng: random.Random, pool: str, **overrides) -> WorldBuilder:
    options = {"contact_count": rng.randint(5, 12), "card_count": rng.randint(1, 3), "history": rng.randint(4, 12)}
    options.update(overrides)
    return WorldBuilder(rng, pool, **options)


def _done(*checks) -> list:
    return [*checks, StatusIs(expected="success"), NoOtherChanges()]


def _send(note: bool = False, private: bool = False, by_phone: bool = False, card: bool = False):
    def build(rng: random.Random, pool: str) -> Variant:
        w = _builder(rng, pool)
        target = rng.choice(w.contacts)
        amount = random_amount(rng)
        text = rng.choice(NOTES) if (note or private) else None
        card_id = None
        slots = {"intent": "send_money", "recipient": target.full_name, "amount": amount}
        fields = {"name": target.full_name, "first": target.first_name, "amount": format_amount(amount)}
        if by_phone:
            slots = {**slots, "recipient": None, "phone_number": target.phone_number}
            fields["phone"] = target.phone_number
        if text:
            slots["note"] = fields["note"] = text
        if private:
            slots["private"] = True
        if card:
            chosen = rng.choice(w.cards)
            card_id = chosen.payment_card_id
            slots["card_last4"] = fields["last4"] = chosen.card_number[-4:]
        check = TransactionMade(receiver_email=target.email, amount=amount, description_contains=text,
                                private=True if private else None, payment_card_id=card_id)
        return Variant(w.build(), fields, slots, _done(check))
    return build


def _request_money(rng, pool):
    w = _builder(rng, pool)
    target, amount, note = rng.choice(w.contacts), random_amount(rng), rng.choice(NOTES)
    slots = {"intent": "request_money", "recipient": target.full_name, "amount": amount, "note": note}
    fields = {"name": target.full_name, "first": target.first_name, "amount": format_amount(amount), "note": note}
    check = PaymentRequestMade(payer_email=target.email, amount=amount, description_contains=note)
    return Variant(w.build(), fields, slots, _done(check))


def _add_balance(rng, pool):
    w = _builder(rng, pool)
    card = rng.choice(w.cards)
    amount = float(rng.randint(2, 30) * 10)
    slots = {"intent": "add_balance", "amount": amount, "card_last4": card.card_number[-4:]}
    fields = {"amount": format_amount(amount), "last4": card.card_number[-4:]}
    return Variant(w.build(), fields, slots, _done(BalanceAdded(payment_card_id=card.payment_card_id, amount=amount)))


def _pending_requests(w: WorldBuilder, rng: random.Random, count: int) -> list:
    """Pending requests received from distinct contacts, with distinct amounts and dates."""
    people = rng.sample(w.contacts, count)
    amounts = rng.sample(range(10, 250), count)
    days = sorted(rng.sample(range(1, 40), count))
    for other in rng.sample(w.contacts, 2):  # settled requests, to be ignored
        w.add_request(other, random_amount(rng), received=True, days_ago=rng.uniform(40, 80),
                      status=rng.choice(("approved", "denied")))
    return [w.add_request(p, float(a), received=True, days_ago=d) for p, a, d in zip(people, amounts, days)]


def _answer_request(status: str):
    def build(rng, pool):
        w = _builder(rng, pool, contact_count=rng.randint(6, 12))
        pending = _pending_requests(w, rng, rng.randint(2, 4))
        chosen = rng.choice(pending)
        requester = next(c for c in w.contacts if c.email == chosen.requester_email)
        slots = {"intent": f"{'approve' if status == 'approved' else 'deny'}_request", "recipient": requester.full_name}
        fields = {"name": requester.full_name, "first": requester.first_name}
        checks = [RequestStatus(payment_request_id=chosen.payment_request_id, status=status)]
        if status == "approved":
            checks.append(TransactionMade(receiver_email=requester.email, amount=chosen.amount))
        return Variant(w.build(), fields, slots, _done(*checks))
    return build


def _pay_back(which: str):
    def build(rng, pool):
        w = _builder(rng, pool, contact_count=rng.randint(8, 12))
        pending = _pending_requests(w, rng, rng.randint(3, 7))
        if which == "largest":
            chosen = max(pending, key=lambda r: r.amount)
        else:
            chosen = min(pending, key=lambda r: r.created_at)
        checks = [RequestStatus(payment_request_id=chosen.payment_request_id, status="approved"),
                  TransactionMade(receiver_email=chosen.requester_email, amount=chosen.amount)]
        return Variant(w.build(), {}, {"intent": f"pay_back_{which}"}, _done(*checks))
    return build


def _answer_balance(rng, pool):
    w = _builder(rng, pool, balance=random_amount(rng, 20, 3000, cents=0.6))
    return Variant(w.build(), {}, {"intent": "answer_balance"}, _done(AnswerIs(expected=w.balance)))


def _answer_last_sent(rng, pool):
    w = _builder(rng, pool)
    target = rng.choice(w.contacts)
    days = sorted(rng.sample(range(1, 60), rng.randint(2, 4)))
    sends = [w.add_transaction(target, random_amount(rng), sent=True, days_ago=d) for d in days]
    w.add_transaction(target, random_amount(rng), sent=False, days_ago=days[0] / 2)  # received later: a distractor
    del sends  # the answer must also account for older history with the same person
    latest = max((t for t in w.transactions if t.receiver_email == target.email), key=lambda t: t.created_at)
    slots = {"intent": "answer_last_sent", "recipient": target.full_name}
    fields = {"name": target.full_name, "first": target.first_name}
    return Variant(w.build(), fields, slots, _done(AnswerIs(expected=latest.amount)))


def _answer_total_sent(rng, pool):
    w = _builder(rng, pool, history=rng.randint(8, 16))
    days = rng.choice((7, 14, 30))
    start = w.now - timedelta(days=days)
    total = round(sum(t.amount for t in w.transactions
                      if t.sender_email == w.supervisor.email and t.created_at >= start), 2)
    return Variant(w.build(), {"days": days}, {"intent": "answer_total_sent", "days": days},
                   _done(AnswerIs(expected=total)))


def _split_bill(rng, pool):
    w = _builder(rng, pool)
    friends = rng.sample(w.contacts, 2)
    share = float(rng.randint(8, 60))
    total = share * 3
    note = rng.choice(NOTES)
    slots = {"intent": "split_bill", "recipients": [f.full_name for f in friends], "total": total, "note": note}
    fields = {"name": friends[0].full_name, "name2": friends[1].full_name, "total": format_amount(total), "note": note}
    checks = [PaymentRequestMade(payer_email=f.email, amount=share, description_contains=note) for f in friends]
    return Variant(w.build(), fields, slots, _done(*checks))


def _fail_unknown_person(rng, pool):
    w = _builder(rng, pool)
    stranger, amount = w.unknown_person, random_amount(rng)
    slots = {"intent": "send_money", "recipient": stranger.full_name, "amount": amount}
    fields = {"name": stranger.full_name, "amount": format_amount(amount)}
    return Variant(w.build(), fields, slots, [StatusIs(expected="fail"), NoOtherChanges()])


def _fail_insufficient_funds(rng, pool):
    w = _builder(rng, pool, card_count=0, balance=float(rng.randint(5, 60)))
    target = rng.choice(w.contacts)
    amount = float(rng.randint(100, 400))
    note = rng.choice(NOTES)
    slots = {"intent": "send_money", "recipient": target.full_name, "amount": amount, "note": note}
    fields = {"name": target.full_name, "amount": format_amount(amount), "note": note}
    return Variant(w.build(), fields, slots, [StatusIs(expected="fail"), NoOtherChanges()])


# a payment to a named person: sending to a contact, and to a stranger (where the agent must fail), read alike
_PAY_BY_NAME = (
    "Send ${amount} to {name}.",
    "Please pay {name} ${amount}.",
    "Transfer ${amount} to {name} from my wallet.",
    "Give {name} ${amount} through the payments app.",
    "{name} should get ${amount} from me.",
    "Make a payment of ${amount} to {name}.",
    "Wire {name} ${amount}.",
    "Get ${amount} over to {name}, please.",
)

_PAY_BY_NAME_ROLLOUT = (
    "{name} is owed ${amount}: send it.",
    "Move ${amount} from my wallet to {name}.",
    "Need to pay {name}: ${amount}.",
    "${amount} for {name}, please.",
    "Settle up with {name} by sending ${amount}.",
)


SCENARIO_TYPES: dict[str, ScenarioType] = {s.name: s for s in (
    ScenarioType("send_by_name", 1, _PAY_BY_NAME,
                 ("Can you send {name} ${amount}?", "I owe {name} ${amount}, please pay them."), _send(),
                 _PAY_BY_NAME_ROLLOUT),
    ScenarioType("send_with_note", 1, (
        "Send ${amount} to {name} for {note}.",
        "Pay {name} ${amount} with the note '{note}'.",
        "Transfer ${amount} to {name}, description: {note}.",
        "Send {name} ${amount} and add the note '{note}'.",
        "For {note}, pay ${amount} to {name}.",
        "Make a ${amount} payment to {name} with '{note}' as the description.",
        "Shoot {name} ${amount} for {note}, thanks.",
        "{name} gets ${amount} from me; put '{note}' in the description.",
    ), ("Could you pay {name} ${amount} for the {note}?", "Venmo {name} ${amount} for {note} please."),
        _send(note=True), (
        "Send {name} ${amount} - it's for {note}.",
        "{note}: send ${amount} to {name}.",
        "Reimburse {name} ${amount} for {note}.",
        "Pay {name} back ${amount}; the note should say {note}.",
        "${amount} to {name}, and write {note} in the description.",
    )),
    ScenarioType("send_by_phone", 2, (
        "Send ${amount} to the contact whose phone number is {phone}.",
        "Pay ${amount} to my contact with phone number {phone}.",
        "Transfer ${amount} to the person at {phone} in my contacts.",
        "Use the phone number {phone} to find my contact and pay them ${amount}.",
        "Whoever has the number {phone} in my contacts should get ${amount}.",
        "Look up {phone} in my contacts and transfer ${amount} to that person.",
        "Wire ${amount} to whoever is saved under {phone}.",
        "The number {phone} belongs to one of my contacts; send them ${amount}.",
    ), ("My contact at {phone} needs ${amount}, send it please.",), _send(by_phone=True), (
        "Pay whoever is at {phone} ${amount}.",
        "${amount} to the contact with the number {phone}.",
        "Find {phone} in my contacts; they get ${amount}.",
        "Send the person saved as {phone} ${amount}.",
    )),
    ScenarioType("send_private", 2, (
        "Privately send ${amount} to {name} for {note}.",
        "Send {name} ${amount} for {note} and keep the payment private.",
        "Pay {name} ${amount} for {note} as a private transaction.",
        "Send ${amount} to {name} for {note}, but make it private.",
        "Pay {name} ${amount} privately, note: {note}.",
        "Quietly send {name} ${amount} for {note}; nobody else should see the transaction.",
        "{name} should get ${amount} for {note}; set the payment to private.",
        "Transfer ${amount} to {name} for {note} with private visibility.",
    ), ("Send a private payment of ${amount} to {name} for {note}.",), _send(private=True), (
        "Keep this one private: pay {name} ${amount} for {note}.",
        "{name} gets ${amount} for {note}. Private, please.",
        "Pay ${amount} privately to {name} for {note}.",
        "Private transfer: ${amount} to {name} for {note}.",
        "For {note}, privately pay {name} ${amount}.",
    )),
    ScenarioType("send_from_card", 2, (
        "Send ${amount} to {name} using my card ending in {last4}.",
        "Pay {name} ${amount} and charge it to my payment card ending {last4}.",
        "Use my card ending in {last4} to send {name} ${amount}.",
        "Pay {name} ${amount} with my card that ends in {last4}.",
        "Send {name} ${amount}; take the money from the card ending {last4}, not from my balance.",
        "With the payment card ending in {last4}, transfer ${amount} to {name}.",
        "Card ending {last4}: pay {name} ${amount}.",
        "Transfer ${amount} to {name}, paid with the card whose number ends in {last4}.",
    ), ("Charge my card ending in {last4} for a ${amount} payment to {name}.",), _send(card=True), (
        "Pay {name} ${amount}, and put it on my card ending {last4}.",
        "{name} should get ${amount}; pay with card {last4}.",
        "Send ${amount} to {name} - bill it to the card ending in {last4}.",
        "The card ending in {last4} pays this one: ${amount} to {name}.",
    )),
    ScenarioType("request_money", 1, (
        "Request ${amount} from {name} for {note}.",
        "Ask {name} to pay me ${amount} for {note}.",
        "Send a payment request of ${amount} to {name} for {note}.",
        "Create a money request for ${amount} to {name}, note: {note}.",
        "Get {name} to pay me ${amount} for {note} with a payment request.",
        "Bill {name} ${amount} for {note}.",
        "Have {name} pay me ${amount} for {note} via a payment request.",
        "I'd like ${amount} back from {name} for {note}; send them a request.",
    ), ("{name} owes me ${amount} for {note}; request it.",), _request_money, (
        "Ask {name} for ${amount} for {note}.",
        "{name} needs to pay me ${amount} for {note}; send a request.",
        "Request that {name} pay me ${amount} for {note}.",
        "Collect ${amount} from {name} for {note} with a payment request.",
    )),
    ScenarioType("add_balance", 1, (
        "Add ${amount} to my wallet balance from my card ending in {last4}.",
        "Top up my wallet with ${amount} using the card ending {last4}.",
        "Move ${amount} from my card ending in {last4} into my wallet.",
        "Put ${amount} into my wallet using the card that ends in {last4}.",
        "Fund my wallet with ${amount} from card {last4}.",
        "Take ${amount} from my payment card ending {last4} and add it to my balance.",
        "Recharge my wallet: ${amount} from the card ending in {last4}.",
        "Transfer ${amount} from card {last4} into my wallet balance.",
    ), ("Load ${amount} onto my wallet from the card ending in {last4}.",), _add_balance, (
        "Pull ${amount} from the card ending in {last4} into my wallet.",
        "Add ${amount} to my balance; use card {last4}.",
        "I need ${amount} more in my wallet, from the card ending {last4}.",
    )),
    ScenarioType("approve_request", 2, (
        "Approve the pending payment request from {name}.",
        "Pay the payment request that {name} sent me.",
        "Accept {name}'s pending money request.",
        "Go ahead and pay {name}'s payment request.",
        "Approve the money request I got from {name}.",
        "Say yes to the payment request from {name}.",
        "I agree to {name}'s payment request; pay it.",
        "Grant the request for money that {name} sent me.",
    ), ("{name} asked me for money; approve that request.",), _answer_request("approved"), (
        "Pay what {name} requested.",
        "Accept the request {first} sent me.",
        "{name} wants money from me; approve the request.",
        "Approve {first}'s request.",
    )),
    ScenarioType("deny_request", 2, (
        "Deny the pending payment request from {name}.",
        "Decline the money request {name} sent me.",
        "Reject {name}'s pending payment request.",
        "Turn down the payment request from {name}.",
        "Refuse to pay the money request {name} sent.",
        "Say no to {name}'s pending request for money.",
        "Mark {name}'s pending payment request as denied.",
        "Turn {name} down: deny the payment request they sent.",
    ), ("I don't want to pay {name}'s request; deny it.",), _answer_request("denied"), (
        "Don't pay the request from {name}; decline it.",
        "Reject the money request from {first}.",
        "No to {name}'s payment request.",
        "{first} sent me a request for money: turn it down.",
    )),
    ScenarioType("pay_back_largest", 3, (
        "Pay the largest pending payment request I have received.",
        "Approve whichever pending request to me has the biggest amount.",
        "Find my biggest pending money request and pay it.",
        "Of the requests waiting for my payment, pay the one with the largest amount.",
        "Pay whichever pending request I received asks for the most money.",
        "Look at my pending payment requests and approve the biggest one.",
        "Which pending request to me is the biggest? Pay that one.",
        "Pay off the pending money request with the top amount.",
    ), ("Settle the pending payment request with the highest amount.",), _pay_back("largest"), (
        "Pay the biggest payment request waiting for me.",
        "Of the requests people sent me that are still open, pay the largest.",
        "Find the largest pending request I received and approve it.",
    )),
    ScenarioType("answer_balance", 1, (
        "What is my wallet balance?",
        "How much money is in my wallet right now?",
        "Tell me my current wallet balance.",
        "How much do I have in my wallet?",
        "What's the balance of my payments wallet?",
        "I need to know my current balance.",
        "Show me how much is left in my wallet.",
        "What's my balance in the wallet app?",
    ), ("Check my wallet and tell me the balance.",), _answer_balance, (
        "How much money do I have?",
        "What's in my wallet?",
        "Tell me my balance, please.",
    )),
    ScenarioType("answer_last_sent", 2, (
        "How much did I send {name} the last time I paid them?",
        "What was the amount of my most recent payment to {name}?",
        "Tell me how much my latest payment to {name} was.",
        "What did I pay {name} most recently?",
        "How much was the last payment I sent to {name}?",
        "Find the most recent amount I sent {name}.",
        "When I last paid {name}, how much was it?",
        "What amount did my latest transfer to {name} have?",
    ), ("Look up my last payment to {name} and tell me its amount.",), _answer_last_sent, (
        "What was the last amount I paid {first}?",
        "My most recent payment to {name}: how much was it?",
        "How much did I last send to {name}?",
    )),
    ScenarioType("fail_unknown_person", 2, _PAY_BY_NAME, ("Can you send {name} ${amount}?",), _fail_unknown_person,
                 _PAY_BY_NAME_ROLLOUT),
    # types below appear only in test_challenge
    ScenarioType("pay_back_oldest", 3, (
        "Pay the oldest pending payment request I have received.",
        "Approve the pending request to me that has been waiting the longest.",
    ), (), _pay_back("oldest")),
    ScenarioType("split_bill", 3, (
        "I paid ${total} for {note} with {name} and {name2}. Request an equal share from each of them.",
        "Split the ${total} {note} bill evenly between me, {name} and {name2} by requesting their shares.",
    ), (), _split_bill),
    ScenarioType("answer_total_sent", 3, (
        "How much money did I send in total in the last {days} days?",
        "What is the total amount I paid to others over the past {days} days?",
    ), (), _answer_total_sent),
    ScenarioType("fail_insufficient_funds", 3, (
        "Send ${amount} to {name} for {note}.",
        "Pay {name} ${amount} for {note}.",
    ), (), _fail_insufficient_funds),
)}

CHALLENGE_TYPES = ("pay_back_oldest", "split_bill", "answer_total_sent", "fail_insufficient_funds")
TRAIN_TYPES = tuple(name for name in SCENARIO_TYPES if name not in CHALLENGE_TYPES)
