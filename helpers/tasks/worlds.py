"""Random but reproducible initial worlds: a supervisor, contacts, wallet users, history and cards."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from helpers.tasks.people import CARD_NAMES, EMAIL_DOMAINS, NAME_POOLS, NOTES, RELATIONSHIPS
from helpers.world.state import (
    Contact, PaymentCard, PaymentRequest, Person, Transaction, WalletState, WorldState,
)


def random_amount(rng: random.Random, low: int = 5, high: int = 200, cents: float = 0.3) -> float:
    """A whole-dollar amount, or with cents some of the time."""
    dollars = rng.randint(low, high)
    if rng.random() < cents:
        return round(dollars + rng.choice((0.25, 0.5, 0.75, 0.99, 0.1, 0.45)), 2)
    return float(dollars)


def format_amount(amount: float) -> str:
    """How amounts appear in instructions and in the expert's code: 25 or 42.50."""
    return f"{amount:.0f}" if float(amount).is_integer() else f"{amount:.2f}"


@dataclass
class WorldBuilder:
    """Builds one world step by step; scenario generators add the records their task needs."""

    rng: random.Random
    pool: str = "seen"
    contact_count: int = 8
    card_count: int = 2
    history: int = 8
    balance: float | None = None
    now: datetime = field(init=False)
    supervisor: Person = field(init=False)
    contacts: list[Contact] = field(init=False)
    strangers: list[Person] = field(init=False)
    cards: list[PaymentCard] = field(init=False)
    transactions: list[Transaction] = field(init=False, default_factory=list)
    requests: list[PaymentRequest] = field(init=False, default_factory=list)

    def __post_init__(self):
        rng = self.rng
        self.now = datetime(2026, rng.randint(1, 12), rng.randint(1, 28), rng.randint(8, 20), rng.choice((0, 15, 30, 45)))
        people = self._people(self.contact_count + 4)
        self.supervisor, others = people[0], people[1:]
        self.contacts = [
            Contact(contact_id=i + 1, relationship=rng.choice(RELATIONSHIPS), **p.model_dump())
            for i, p in enumerate(others[: self.contact_count])
        ]
        self.strangers = others[self.contact_count:]  # wallet users who are not contacts, plus unknown people
        names = rng.sample(CARD_NAMES, self.card_count)
        self.cards = [
            PaymentCard(payment_card_id=100 + i, card_name=name,
                        card_number="4" + "".join(str(rng.randint(0, 9)) for _ in range(15)),
                        expiry_date=f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}",
                        balance=float(rng.randint(8, 50) * 100))
            for i, name in enumerate(names)
        ]
        if self.balance is None:
            self.balance = float(rng.randint(400, 2000))
        for _ in range(self.history):
            other = rng.choice(self.contacts)
            sent = rng.random() < 0.5
            self.add_transaction(other, random_amount(rng), sent=sent, days_ago=rng.uniform(1, 90))

    def _people(self, count: int) -> list[Person]:
        # distinct first names, so "Alice" never names two people in one world
        firsts, lasts = NAME_POOLS[self.pool]
        people, phones = [], set()
        for first in self.rng.sample(firsts, count):
            last = self.rng.choice(lasts)
            phone = f"{self.rng.randint(201, 989)}-555-{self.rng.randint(0, 9999):04d}"
            while phone in phones:
                phone = f"{self.rng.randint(201, 989)}-555-{self.rng.randint(0, 9999):04d}"
            phones.add(phone)
            email = f"{first.lower()}.{last.lower()}@{self.rng.choice(EMAIL_DOMAINS)}"
            people.append(Person(first_name=first, last_name=last, email=email, phone_number=phone))
        return people

    def _time(self, days_ago: float) -> datetime:
        return (self.now - timedelta(days=days_ago)).replace(second=0, microsecond=0)

    def add_transaction(self, other: Person, amount: float, sent: bool, days_ago: float,
                        note: str | None = None) -> Transaction:
        me = self.supervisor.email
        t = Transaction(
            transaction_id=len(self.transactions) + 1,
            sender_email=me if sent else other.email, receiver_email=other.email if sent else me,
            amount=amount, description=note or self.rng.choice(NOTES), private=self.rng.random() < 0.2,
            created_at=self._time(days_ago),
        )
        self.transactions.append(t)
        return t

    def add_request(self, other: Person, amount: float, received: bool, days_ago: float,
                    status: str = "pending", note: str | None = None) -> PaymentRequest:
        me = self.supervisor.email
        r = PaymentRequest(
            payment_request_id=len(self.requests) + 1,
            requester_email=other.email if received else me, payer_email=me if received else other.email,
            amount=amount, description=note or self.rng.choice(NOTES), status=status,
            created_at=self._time(days_ago), updated_at=None if status == "pending" else self._time(days_ago / 2),
        )
        self.requests.append(r)
        return r

    def build(self) -> WorldState:
        wallet_users = [self.supervisor, *self.contacts, *self.strangers[:2]]
        friends = [c.email for c in self.contacts if self.rng.random() < 0.5]
        self.transactions.sort(key=lambda t: t.created_at)
        for i, t in enumerate(self.transactions, start=1):
            t.transaction_id = i
        return WorldState(
            now=self.now,
            supervisor=self.supervisor,
            passwords={"phone": self._password(), "wallet": self._password()},
            payment_cards=self.cards,
            contacts=self.contacts,
            wallet=WalletState(balance=self.balance, users=wallet_users, friends=friends,
                               transactions=self.transactions, payment_requests=self.requests),
        )

    def _password(self) -> str:
        alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        return "".join(self.rng.choice(alphabet) for _ in range(10))

    @property
    def unknown_person(self) -> Person:
        """Someone in neither the contacts nor the wallet."""
        return self.strangers[-1]
