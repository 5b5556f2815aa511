"""The payments chat protocol: the system prompt, and how the assistant asks for a missing detail, acts in code
and confirms. The training conversations (helpers.data.conversations), the chat evaluation
(helpers.evaluation.chats) and the chat rollouts of GRPO (helpers.rl) all speak it.

Every reply before acting is JSON whose thought first lists what the user gave: "Person: Ann. Amount: $20.
Note: not given." A missing detail is then written down, where the model would otherwise invent one. The reply is
then a question (`{"thought", "question"}`) whose thought ends by naming the detail it asks for ("I ask for the
note."), or, once everything is known, the action (`{"thought", "action"}`). The simulated user reads only the
question.
"""
from __future__ import annotations

import json

from helpers.agent.simulated_user import UserGoal
from helpers.tasks.worlds import format_amount

CHAT_SYSTEM_PROMPT = (
    "You are a payments assistant that operates the user's apps by writing Python. "
    "Each reply is JSON whose thought first lists the person, the amount and the note the user gave. "
    "If one of them is not given, reply {\"thought\": ..., \"question\": ...} with one short question. "
    "When you know everything, reply {\"thought\": ..., \"action\": ...} whose action is the code to run; "
    "`apis.<app>.<api>(...)` calls the apps (supervisor, phone, wallet). "
    "After the code's output, confirm to the user in one sentence."
)
NOT_GIVEN = "not given"

LOGIN_CODE = (
    "passwords = {item[\"account_name\"]: item[\"password\"] for item in apis.supervisor.show_account_passwords()}\n"
    "profile = apis.supervisor.show_profile()\n"
    "phone_token = apis.phone.login(username=profile[\"phone_number\"], password=passwords[\"phone\"])[\"access_token\"]\n"
    "wallet_token = apis.wallet.login(username=profile[\"email\"], password=passwords[\"wallet\"])[\"access_token\"]\n"
)


def known_details(recipient_text: str | None, amount: float | None, note: str | None) -> str:
    """The thought's first sentence: what the user has given so far, a missing detail written as not given."""
    def shown(value):
        return value if value is not None else NOT_GIVEN
    amount_text = None if amount is None else "$" + format_amount(amount)
    return f"Person: {shown(recipient_text)}. Amount: {shown(amount_text)}. Note: {shown(note)}."


# How the thought names the detail it asks for, right before the question: the question then follows from the
# words just written, not from finding which of the three listed details reads "not given".
SLOT_NAMES = {"recipient": "person", "amount": "amount", "note": "note"}


def chat_question(slot: str, intent: str, known: dict) -> str:
    """The JSON reply asking for `slot`: its thought lists what is known (`known`: recipient_text, amount, note)
    and names the detail it asks for."""
    thought = (known_details(known.get("recipient_text"), known.get("amount"), known.get("note"))
               + f" I ask for the {SLOT_NAMES[slot]}.")
    return json.dumps({"thought": thought, "question": _question_text(slot, intent, known)}, ensure_ascii=False)


def _question_text(slot: str, intent: str, known: dict) -> str:
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
        plan = f"I log in, find {goal.recipient_text} in my contacts and send ${amount} for {goal.note}."
    else:
        call = (f"print(apis.wallet.create_payment_request(access_token=wallet_token, user_email=contacts[0][\"email\"], "
                f"amount={amount}, description={json.dumps(goal.note)}))")
        plan = f"I log in, find {goal.recipient_text} in my contacts and request ${amount} for {goal.note}."
    return f"{known_details(goal.recipient_text, goal.amount, goal.note)} {plan}", LOGIN_CODE + lookup + call


def chat_confirmation(goal: UserGoal) -> str:
    amount = f"${goal.amount:,.2f}"
    if goal.intent == "send_money":
        return f"Done: I sent {amount} to {goal.recipient} for {goal.note}."
    return f"Done: I asked {goal.recipient} to pay you {amount} for {goal.note}."
