"""Shared fixtures: a small hand-built world that tests can reason about exactly."""
from datetime import datetime

import pytest

from helpers.world import Contact, PaymentCard, PaymentRequest, Person, Transaction, WalletState, World, WorldState

ANN = Person(first_name="Ann", last_name="Lee", email="ann.lee@example.com", phone_number="415-555-0100")
BOB = Person(first_name="Bob", last_name="Ray", email="bob.ray@example.com", phone_number="415-555-0101")
CY = Person(first_name="Cy", last_name="Fox", email="cy.fox@example.com", phone_number="212-555-0199")
NOW = datetime(2026, 3, 14, 10, 0)


def make_state(balance: float = 100.0) -> WorldState:
    return WorldState(
        now=NOW, supervisor=ANN, passwords={"wallet": "w-pass", "phone": "p-pass"},
        payment_cards=[PaymentCard(payment_card_id=101, card_name="Test Visa", card_number="4000000000001234",
                                   expiry_date="01/29", balance=500.0)],
        contacts=[Contact(contact_id=1, relationship="friend", **BOB.model_dump()),
                  Contact(contact_id=2, relationship="sister", **CY.model_dump())],
        wallet=WalletState(
            balance=balance, users=[ANN, BOB, CY], friends=[BOB.email],
            transactions=[Transaction(transaction_id=1, sender_email=ANN.email, receiver_email=BOB.email, amount=12.5,
                                      description="coffee", created_at=datetime(2026, 3, 1, 9))],
            payment_requests=[PaymentRequest(payment_request_id=1, requester_email=CY.email, payer_email=ANN.email,
                                             amount=30.0, description="tickets", created_at=datetime(2026, 3, 2))],
        ),
    )


@pytest.fixture
def state() -> WorldState:
    return make_state()


@pytest.fixture
def world(state) -> World:
    return World(state)


@pytest.fixture
def wallet_token(world) -> str:
    return world.call("wallet", "login", [], {"username": ANN.email, "password": "w-pass"})["access_token"]


@pytest.fixture
def phone_token(world) -> str:
    return world.call("phone", "login", [], {"username": ANN.phone_number, "password": "p-pass"})["access_token"]
