"""The payments chat protocol: the system prompt, and how the assistant asks for a missing detail, acts in code
and confirms. The training conversations (helpers.data.conversations) and the chat evaluation
(helpers.evaluation.chats) both speak it."""
from __future__ import annotations

import json

from helpers.agent.simulated_user import UserGoal
from helpers.tasks.worlds import format_amount

CHAT_SYSTEM_PROMPT = (
    "You are a payments assistant that operates the user's apps by writing Python. "
    "If a request lacks the person, the amount or what it is for, ask one short question. "
    "When you know everything, reply with JSON {\"thought\": ..., \"action\": ...} whose action is the code to run; "
    "`apis.<app>.<api>(...)` calls the apps (supervisor, phone, wallet). "
    "After the code's output, confirm to the user in one sentence."
)

LOGIN_CODE = (
    "passwords = {item[\"account_name\"]: item[\"password\"] for item in apis.supervisor.show_account_passwords()}\n"
    "profile = apis.supervisor.show_profile()\n"
    "phone_token = apis.phone.login(username=profile[\"phone_number\"], password=passwords[\"phone\"])[\"access_token\"]\n"
    "wallet_token = apis.wallet.login(username=profile[\"email\"], password=passwords[\"wallet\"])[\"access_token\"]\n"
)


def chat_question(slot: str, intent: str, known: dict) -> str:
    who = known.get("recipient_text")
    amount = f"${format_amount(known['amount'])}" if known.get("amount") is not None else None
    if slot == "amount":
        return f"How much should I {'send to' if intent == 'send_money' else 'request from'} {who}?"
    if slot == "recipient":
        return f"Who should I {'send' if intent == 'send_money' else 'request'} {amount or 'the money'} " \
               f"{'to' if intent == 'send_money' else 'from'}?"
    return "What is it for? I'll add that as the note."


def chat_action(goal: UserGoal) -> tuple[str, str]:
    amount = format_amount(goal.amount)
    lookup = f"contacts = apis.phone.search_contacts(access_token=phone_token, query={json.dumps(goal.recipient_text)})\n"
    if goal.intent == "send_money":
        call = (f"print(apis.wallet.send_money(access_token=wallet_token, receiver_email=contacts[0][\"email\"], "
                f"amount={amount}, description={json.dumps(goal.note)}))")
        thought = f"I log in, find {goal.recipient_text} in my contacts and send ${amount} for {goal.note}."
    else:
        call = (f"print(apis.wallet.create_payment_request(access_token=wallet_token, user_email=contacts[0][\"email\"], "
                f"amount={amount}, description={json.dumps(goal.note)}))")
        thought = f"I log in, find {goal.recipient_text} in my contacts and request ${amount} for {goal.note}."
    return thought, LOGIN_CODE + lookup + call


def chat_confirmation(goal: UserGoal) -> str:
    amount = f"${goal.amount:,.2f}"
    if goal.intent == "send_money":
        return f"Done: I sent {amount} to {goal.recipient} for {goal.note}."
    return f"Done: I asked {goal.recipient} to pay you {amount} for {goal.note}."
