"""The simulated apps: docs, credentials, paging, money movements and the errors a model sees."""
import json

import pytest

from helpers.world import API_SPECS, ApiError, World
from tests.conftest import ANN, BOB, CY, NOW, make_state


def call(world, app, api, **kwargs):
    return world.call(app, api, [], kwargs)


def error_of(world, app, api, **kwargs) -> str:
    with pytest.raises(ApiError) as caught:
        world.call(app, api, [], kwargs)
    return str(caught.value)


def test_every_api_has_a_json_doc_with_typed_parameters(world):
    apps = call(world, "api_docs", "show_app_descriptions")
    assert [a["name"] for a in apps] == ["api_docs", "supervisor", "phone", "wallet"]
    for app in API_SPECS:
        listed = call(world, "api_docs", "show_api_descriptions", app_name=app)
        assert listed and all(item["description"] for item in listed)
        for item in listed:
            doc = call(world, "api_docs", "show_api_doc", app_name=app, api_name=item["name"])
            json.dumps(doc)
            assert doc["response_schema"]
            for param in doc["parameters"]:
                assert param["type"] in {"string", "integer", "number", "boolean", "string | number | integer"}
                assert isinstance(param["required"], bool) and param["description"]
    send = call(world, "api_docs", "show_api_doc", app_name="wallet", api_name="send_money")
    amount = next(p for p in send["parameters"] if p["name"] == "amount")
    assert amount["required"] and "value > 0" in amount["constraints"]


def test_unknown_app_and_api_are_named_with_a_way_forward(world):
    assert "Available apps: api_docs, supervisor, phone, wallet" in error_of(world, "venmo", "send_money")
    message = error_of(world, "wallet", "send_mony")
    assert "Did you mean 'send_money'" in message and "show_api_descriptions" in message


def test_login_needs_the_supervisor_password_and_tokens_are_checked(world):
    assert "Invalid username or password" in error_of(world, "wallet", "login", username=ANN.email, password="nope")
    assert "Invalid or expired access token" in error_of(world, "wallet", "show_balance", access_token="forged")
    assert "Missing required parameter 'access_token'" in error_of(world, "wallet", "show_balance")


def test_send_money_moves_balance_and_records_a_transaction(world, wallet_token):
    out = call(world, "wallet", "send_money", access_token=wallet_token, receiver_email=BOB.email, amount=25,
               description="lunch", private=True)
    assert out["transaction_id"] == 2
    assert call(world, "wallet", "show_balance", access_token=wallet_token) == {"balance": 75.0}
    newest = call(world, "wallet", "show_transactions", access_token=wallet_token)[0]
    assert newest["amount"] == 25.0 and newest["private"] is True and newest["created_at"] == NOW.isoformat()


@pytest.mark.parametrize("kwargs, expected", [
    ({"amount": -5}, "must be greater than 0"),
    ({"amount": 1.234}, "at most 2 decimal places"),
    ({"amount": "ten"}, "expected a number"),
    ({"amount": 500}, "Insufficient balance: you have $100.00 but need $500.00"),
    ({"amount": 5, "receiver_email": "ghost@example.com"}, "No wallet user with email 'ghost@example.com'"),
    ({"amount": 5, "receiver": BOB.email}, "Unexpected parameter 'receiver'"),
    ({"amount": 5, "payment_card_id": 999}, "No payment card with payment_card_id 999"),
])
def test_send_money_refusals_say_what_is_wrong(world, wallet_token, kwargs, expected):
    arguments = {"access_token": wallet_token, "receiver_email": BOB.email, **kwargs}
    assert expected in error_of(world, "wallet", "send_money", **arguments)
    assert call(world, "wallet", "show_balance", access_token=wallet_token) == {"balance": 100.0}


def test_card_payments_and_top_ups_charge_the_card(world, wallet_token):
    call(world, "wallet", "send_money", access_token=wallet_token, receiver_email=BOB.email, amount=300,
         payment_card_id=101)
    call(world, "wallet", "add_to_balance", access_token=wallet_token, amount=50, payment_card_id=101)
    assert call(world, "supervisor", "show_payment_cards")[0]["balance"] == 150.0
    assert call(world, "wallet", "show_balance", access_token=wallet_token) == {"balance": 150.0}
    assert "only $150.00 of credit" in error_of(world, "wallet", "add_to_balance", access_token=wallet_token,
                                                amount=151, payment_card_id=101)


def test_payment_requests_approve_once(world, wallet_token):
    pending = call(world, "wallet", "show_payment_requests", access_token=wallet_token, status="pending")
    assert [r["payment_request_id"] for r in pending] == [1]
    call(world, "wallet", "approve_payment_request", access_token=wallet_token, payment_request_id=1)
    assert call(world, "wallet", "show_balance", access_token=wallet_token) == {"balance": 70.0}
    again = error_of(world, "wallet", "approve_payment_request", access_token=wallet_token, payment_request_id=1)
    assert "already approved" in again
    assert "already approved" in error_of(world, "wallet", "deny_payment_request", access_token=wallet_token,
                                          payment_request_id=1)
    made = call(world, "wallet", "create_payment_request", access_token=wallet_token, user_email=CY.email, amount=9)
    sent = call(world, "wallet", "show_payment_requests", access_token=wallet_token, direction="sent")
    assert [r["payment_request_id"] for r in sent] == [made["payment_request_id"]]
    assert "was not sent to you" in error_of(world, "wallet", "deny_payment_request", access_token=wallet_token,
                                             payment_request_id=made["payment_request_id"])


def test_lists_are_paged_and_filtered(world, wallet_token, phone_token):
    for amount in range(1, 8):
        call(world, "wallet", "send_money", access_token=wallet_token, receiver_email=CY.email, amount=amount)
    first = call(world, "wallet", "show_transactions", access_token=wallet_token, user_email=CY.email)
    second = call(world, "wallet", "show_transactions", access_token=wallet_token, user_email=CY.email, page_index=1)
    assert len(first) == 5 and len(second) == 2
    assert call(world, "wallet", "show_transactions", access_token=wallet_token, user_email=CY.email,
                page_index=2) == []
    old = call(world, "wallet", "show_transactions", access_token=wallet_token, max_created_at="2026-03-05")
    assert [t["transaction_id"] for t in old] == [1]
    assert "ISO date" in error_of(world, "wallet", "show_transactions", access_token=wallet_token,
                                  min_created_at="last week")
    assert "at most 20" in error_of(world, "wallet", "show_transactions", access_token=wallet_token, page_limit=50)
    by_phone = call(world, "phone", "search_contacts", access_token=phone_token, query="(212) 555 0199")
    assert [c["email"] for c in by_phone] == [CY.email]
    sisters = call(world, "phone", "search_contacts", access_token=phone_token, relationship="sister")
    assert [c["first_name"] for c in sisters] == ["Cy"]
    assert call(world, "wallet", "show_friends", access_token=wallet_token)[0]["email"] == BOB.email
    assert call(world, "wallet", "search_users", access_token=wallet_token, query="fox")[0]["email"] == CY.email


def test_complete_task_records_answer_and_status_once(world):
    assert "must be one of success, fail" in error_of(world, "supervisor", "complete_task", status="done")
    call(world, "supervisor", "complete_task", answer=12.5)
    assert world.completion == {"answer": 12.5, "status": "success"}
    assert "already completed" in error_of(world, "supervisor", "complete_task")


def test_each_world_owns_a_copy_of_its_initial_state():
    initial = make_state()
    first, second = World(initial), World(initial)
    token = first.call("wallet", "login", [], {"username": ANN.email, "password": "w-pass"})["access_token"]
    first.call("wallet", "send_money", [], {"access_token": token, "receiver_email": BOB.email, "amount": 10})
    assert initial.wallet.balance == second.state.wallet.balance == 100.0
    assert "Invalid or expired" in error_of(second, "wallet", "show_balance", access_token=token)
