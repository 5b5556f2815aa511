"""The data that makes up one world: people, cards, contacts and the wallet's records.

Everything here is plain, JSON-serialisable data (pydantic models), so a world can be
stored inside a task file, copied for each episode, and compared before and after.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """Base for every world record: unknown fields are an error, so typos in task files surface."""

    model_config = ConfigDict(extra="forbid")


class Person(Record):
    first_name: str
    last_name: str
    email: str
    phone_number: str

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class Contact(Person):
    contact_id: int
    relationship: str = "friend"
    nickname: str | None = None


class PaymentCard(Record):
    payment_card_id: int
    card_name: str
    card_number: str = Field(pattern=r"^\d{16}$")
    expiry_date: str = Field(pattern=r"^\d{2}/\d{2}$")
    balance: float = Field(ge=0, description="credit still available on the card")


class Transaction(Record):
    transaction_id: int
    sender_email: str
    receiver_email: str
    amount: float = Field(gt=0)
    description: str = ""
    private: bool = False
    created_at: datetime
    payment_card_id: int | None = None


class PaymentRequest(Record):
    payment_request_id: int
    requester_email: str = Field(description="who asks for the money")
    payer_email: str = Field(description="who is asked to pay")
    amount: float = Field(gt=0)
    description: str = ""
    private: bool = False
    status: Literal["pending", "approved", "denied"] = "pending"
    created_at: datetime
    updated_at: datetime | None = None


class TopUp(Record):
    top_up_id: int
    payment_card_id: int
    amount: float = Field(gt=0)
    created_at: datetime


class WalletState(Record):
    balance: float = Field(ge=0, description="the supervisor's wallet balance")
    users: list[Person] = Field(description="everyone with a wallet account, the supervisor included")
    friends: list[str] = Field(default_factory=list, description="emails of the supervisor's wallet friends")
    transactions: list[Transaction] = Field(default_factory=list)
    payment_requests: list[PaymentRequest] = Field(default_factory=list)
    top_ups: list[TopUp] = Field(default_factory=list)


class WorldState(Record):
    now: datetime = Field(description="the fixed current time of the task")
    supervisor: Person
    passwords: dict[str, str] = Field(description="account name (wallet, phone) to password")
    payment_cards: list[PaymentCard] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    wallet: WalletState
