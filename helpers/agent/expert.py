"""A scripted expert that solves every task like a careful agent, one thought and one code step at a time.

It reads the request stated by the instruction (`task.slots`), never the checks; it learns
everything else (emails, ids, balances) from the observations of the code it runs in the
sandbox. It is the offline teacher of the data notebooks and the upper bound in evaluation.
A task it cannot plan (no slots, an intent it does not know, slots it cannot use) or cannot
finish ends as a failed episode whose error says why; the other episodes go on.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Generator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helpers.harness.episode import Action, Step
from helpers.tasks.files import field_path, user_location
from helpers.tasks.schema import Task
from helpers.tasks.worlds import format_amount

Solver = Generator["Action", Step, None]  # yields actions, is sent each action's step


class ExpertError(RuntimeError):
    """The expert cannot plan a task, or met an observation it cannot handle; the message is one line saying why."""


class ExpertPolicy:
    """Stateless: the next action is a function of the request and the observations so far."""

    name = "expert"

    def act(self, task: Task, history: Sequence[Step]) -> Action:
        """The next action, or an action that gives up (with the reason) when the expert cannot go on."""
        try:
            solver = solve(task)
            action = next(solver)
            for step in history:
                action = solver.send(step)
        except StopIteration:
            return Action("", "", gave_up="the expert has no step after completing the task")
        except ExpertError as error:
            return Action("", "", gave_up=f"the expert cannot do this task: {error}")
        except Exception as error:  # a bug in a plan must cost one episode, not the whole evaluation
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]  # one line in the results
            return Action("", "", gave_up=f"the expert failed on this task ({reason})")
        return action

    def act_batch(self, tasks: Sequence[Task], histories: Sequence[Sequence[Step]]) -> list[Action]:
        return [self.act(task, history) for task, history in zip(tasks, histories)]


class Slots(BaseModel):
    """The request an instruction states, as data; one subclass per intent says which slots that intent takes."""

    # strict: the expert writes these values into code, so "25" must not pass for 25
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SendMoneySlots(Slots):
    """Pay someone, named or by phone number; from a card if `card_last4` is given, topping up the balance if needed."""

    intent: Literal["send_money"]
    recipient: str | None = Field(None, description="the person's full name as in the contacts")
    phone_number: str | None = Field(None, description="instead of a name")
    amount: float = Field(gt=0)
    note: str | None = None
    private: bool = False
    card_last4: str | None = Field(None, pattern=r"^\d{4}$", description="pay with this card")

    @model_validator(mode="after")
    def _someone(self):
        if not self.recipient and not self.phone_number:
            raise ValueError("send_money needs a recipient or a phone_number")
        return self


class RequestMoneySlots(Slots):
    """Ask a contact to pay you."""

    intent: Literal["request_money"]
    recipient: str
    amount: float = Field(gt=0)
    note: str


class AddBalanceSlots(Slots):
    """Move money from a card into the wallet."""

    intent: Literal["add_balance"]
    amount: float = Field(gt=0)
    card_last4: str = Field(pattern=r"^\d{4}$")


class AnswerRequestSlots(Slots):
    """Approve or deny the one pending request a contact sent you."""

    intent: Literal["approve_request", "deny_request"]
    recipient: str


class NoSlots(Slots):
    """Pay back the largest or the oldest pending request, or answer with the wallet balance."""

    intent: Literal["pay_back_largest", "pay_back_oldest", "answer_balance"]


class LastSentSlots(Slots):
    """Answer how much you last sent a contact."""

    intent: Literal["answer_last_sent"]
    recipient: str


class TotalSentSlots(Slots):
    """Answer how much you sent in total over the last `days` days."""

    intent: Literal["answer_total_sent"]
    days: int = Field(gt=0)


class SplitBillSlots(Slots):
    """Request an equal share of a bill from each of the people named."""

    intent: Literal["split_bill"]
    recipients: list[str] = Field(min_length=1)
    total: float = Field(gt=0)
    note: str


def q(value) -> str:
    """A Python literal for a value that appears in generated code."""
    return json.dumps(value)


def _parsed(step: Step, what: str):
    if not step.ok:
        raise ExpertError(f"its step failed while {what}: {_last_line(step.observation)}")
    try:
        return json.loads(step.observation)
    except ValueError:
        raise ExpertError(f"it could not read the output while {what}: {_last_line(step.observation)}") from None


def _last_line(text: str) -> str:
    """The line of an observation that says what went wrong (the error comes last), clipped."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "(no output)"
    return last if len(last) <= 200 else last[:200] + "..."


def read_doc(app: str, api: str) -> Solver:
    yield Action(f"First I read the documentation of {app}.{api} to know its parameters.",
                 f"print(apis.api_docs.show_api_doc(app_name={q(app)}, api_name={q(api)}))")


def log_in() -> Solver:
    step = yield Action(
        "I get my account passwords from the supervisor app and log in to the phone and wallet apps.",
        "passwords = {item[\"account_name\"]: item[\"password\"] for item in apis.supervisor.show_account_passwords()}\n"
        "profile = apis.supervisor.show_profile()\n"
        "phone_token = apis.phone.login(username=profile[\"phone_number\"], password=passwords[\"phone\"])[\"access_token\"]\n"
        "wallet_token = apis.wallet.login(username=profile[\"email\"], password=passwords[\"wallet\"])[\"access_token\"]",
    )
    if not step.ok:
        raise ExpertError(f"logging in failed: {_last_line(step.observation)}")


def find_contact(name: str | None, phone: str | None = None, variable: str = "recipient", prefix: str = "") -> Solver:
    """Search the phone contacts; returns (contact, code that names it) or (None, "")."""
    query = name if name else phone
    found = _parsed((yield Action(
        f"I look up {query} in my phone contacts to get the email address.",
        f"{prefix}contacts = apis.phone.search_contacts(access_token=phone_token, query={q(query)})\nprint(contacts)",
    )), "searching contacts")
    for index, contact in enumerate(found):
        full = f"{contact['first_name']} {contact['last_name']}"
        if (name and full == name) or (phone and contact["phone_number"] == phone):
            return contact, f"{variable} = contacts[{index}]\n"
    return None, ""


def find_wallet_user(name: str) -> Solver:
    """Search the wallet's users; returns (user, code that names it) or (None, "")."""
    found = _parsed((yield Action(
        f"{name} is not in my contacts, so I search the wallet's users.",
        f"users = apis.wallet.search_users(access_token=wallet_token, query={q(name)})\nprint(users)",
    )), "searching users")
    for index, user in enumerate(found):
        if f"{user['first_name']} {user['last_name']}" == name:
            return user, f"recipient = users[{index}]\n"
    return None, ""


def give_up(reason: str) -> Solver:
    yield Action(f"{reason} So I cannot do this task and mark it as failed.",
                 "apis.supervisor.complete_task(status=\"fail\")")


def complete(answer_code: str | None = None) -> Solver:
    if answer_code is None:
        yield Action("The task is done, so I mark it as complete.", "apis.supervisor.complete_task()")
    else:
        yield Action("I have the answer, so I complete the task with it.",
                     f"apis.supervisor.complete_task(answer={answer_code})")


def choose_card(last4: str, prefix: str = "") -> Solver:
    card = _parsed((yield Action(
        f"I need the payment card ending in {last4}; the supervisor app lists my cards.",
        f"{prefix}card = [c for c in apis.supervisor.show_payment_cards() if c[\"card_number\"].endswith({q(last4)})][0]\n"
        "print(card)",
    )), "choosing a card")
    return card


def send_money(task: Task) -> Solver:
    s = task.slots
    amount = format_amount(s["amount"])
    yield from read_doc("wallet", "send_money")
    yield from log_in()
    who = s.get("recipient") or s.get("phone_number")
    contact, name_it = yield from find_contact(s.get("recipient"), s.get("phone_number"))
    if contact is None and s.get("recipient"):
        contact, name_it = yield from find_wallet_user(s["recipient"])
    if contact is None:
        yield from give_up(f"{who} is neither in my contacts nor a wallet user.")
        return
    card_argument = ""
    if s.get("card_last4"):
        yield from choose_card(s["card_last4"], name_it)
        card_argument = ", payment_card_id=card[\"payment_card_id\"]"
    else:
        balance = _parsed((yield Action(
            f"{who}'s email is {contact['email']}. Before paying I check that my wallet balance covers ${amount}.",
            f"{name_it}balance = apis.wallet.show_balance(access_token=wallet_token)[\"balance\"]\nprint(balance)",
        )), "checking the balance")
        if balance < s["amount"]:
            cards = _parsed((yield Action(
                f"My balance of ${balance:.2f} is not enough, so I look for a payment card to top it up.",
                "cards = apis.supervisor.show_payment_cards()\nprint(cards)",
            )), "listing cards")
            missing = round(s["amount"] - balance, 2)
            usable = [c for c in cards if c["balance"] >= missing]
            if not usable:
                yield from give_up(f"My balance of ${balance:.2f} is below ${amount} and no payment card can cover it.")
                return
            yield Action(f"I add ${format_amount(missing)} from my {usable[0]['card_name']} card to my balance.",
                         f"print(apis.wallet.add_to_balance(access_token=wallet_token, amount={format_amount(missing)}, "
                         f"payment_card_id={usable[0]['payment_card_id']}))")
    extras = ""
    if s.get("note"):
        extras += f", description={q(s['note'])}"
    if s.get("private"):
        extras += ", private=True"
    _parsed((yield Action(
        f"Now I send ${amount} to {who}" + (f" for {s['note']}" if s.get("note") else "") + ".",
        f"print(apis.wallet.send_money(access_token=wallet_token, receiver_email=recipient[\"email\"], "
        f"amount={amount}{extras}{card_argument}))",
    )), "sending money")
    yield from complete()


def request_money(task: Task) -> Solver:
    s = task.slots
    yield from read_doc("wallet", "create_payment_request")
    yield from log_in()
    contact, name_it = yield from find_contact(s["recipient"])
    if contact is None:
        yield from give_up(f"{s['recipient']} is not in my contacts.")
        return
    _parsed((yield Action(
        f"{s['recipient']}'s email is {contact['email']}. I request ${format_amount(s['amount'])} for {s['note']}.",
        f"{name_it}print(apis.wallet.create_payment_request(access_token=wallet_token, user_email=recipient[\"email\"], "
        f"amount={format_amount(s['amount'])}, description={q(s['note'])}))",
    )), "requesting money")
    yield from complete()


def add_balance(task: Task) -> Solver:
    s = task.slots
    yield from read_doc("wallet", "add_to_balance")
    yield from log_in()
    yield from choose_card(s["card_last4"])
    _parsed((yield Action(
        f"I move ${format_amount(s['amount'])} from that card into my wallet.",
        f"print(apis.wallet.add_to_balance(access_token=wallet_token, amount={format_amount(s['amount'])}, "
        "payment_card_id=card[\"payment_card_id\"]))",
    )), "adding balance")
    yield from complete()


def answer_request(task: Task) -> Solver:
    s = task.slots
    approve = s["intent"] == "approve_request"
    verb = "approve_payment_request" if approve else "deny_payment_request"
    yield from read_doc("wallet", "show_payment_requests")
    yield from log_in()
    contact, name_it = yield from find_contact(s["recipient"])
    if contact is None:
        yield from give_up(f"{s['recipient']} is not in my contacts.")
        return
    pending = _parsed((yield Action(
        f"{s['recipient']}'s email is {contact['email']}. I list the pending payment requests they sent me.",
        f"{name_it}requests = apis.wallet.show_payment_requests(access_token=wallet_token, direction=\"received\", "
        "status=\"pending\", user_email=recipient[\"email\"])\nprint(requests)",
    )), "listing requests")
    if len(pending) != 1:
        yield from give_up(f"I expected one pending request from {s['recipient']} and found {len(pending)}.")
        return
    _parsed((yield Action(
        f"There is one pending request of ${pending[0]['amount']:.2f}; I {'approve' if approve else 'deny'} it.",
        f"print(apis.wallet.{verb}(access_token=wallet_token, payment_request_id=requests[0][\"payment_request_id\"]))",
    )), "answering the request")
    yield from complete()


def collect_pending_requests() -> Solver:
    pending = _parsed((yield Action(
        "I collect all my pending received requests, page by page.",
        "requests = []\n"
        "page_index = 0\n"
        "while True:\n"
        "    page = apis.wallet.show_payment_requests(access_token=wallet_token, direction=\"received\", "
        "status=\"pending\", page_index=page_index)\n"
        "    if not page:\n"
        "        break\n"
        "    requests.extend(page)\n"
        "    page_index += 1\n"
        "print(requests)",
    )), "collecting requests")
    return pending


def pay_back(task: Task) -> Solver:
    largest = task.slots["intent"] == "pay_back_largest"
    yield from read_doc("wallet", "show_payment_requests")
    yield from log_in()
    pending = yield from collect_pending_requests()
    if not pending:
        yield from give_up("I have no pending payment requests.")
        return
    if largest:
        chosen = max(pending, key=lambda r: r["amount"])
        pick = "chosen = max(requests, key=lambda r: r[\"amount\"])"
        why = f"The largest is ${chosen['amount']:.2f} from {chosen['requester_email']}"
    else:
        chosen = min(pending, key=lambda r: r["created_at"])
        pick = "chosen = min(requests, key=lambda r: r[\"created_at\"])"
        why = f"The oldest is from {chosen['requester_email']}, created {chosen['created_at']}"
    _parsed((yield Action(
        f"{why}; I approve it.",
        f"{pick}\nprint(apis.wallet.approve_payment_request(access_token=wallet_token, "
        "payment_request_id=chosen[\"payment_request_id\"]))",
    )), "approving a request")
    yield from complete()


def answer_balance(task: Task) -> Solver:
    yield from read_doc("wallet", "show_balance")
    yield from log_in()
    _parsed((yield Action("I read my wallet balance.",
                          "balance = apis.wallet.show_balance(access_token=wallet_token)[\"balance\"]\nprint(balance)")),
            "reading the balance")
    yield from complete("balance")


def answer_last_sent(task: Task) -> Solver:
    name = task.slots["recipient"]
    yield from read_doc("wallet", "show_transactions")
    yield from log_in()
    contact, name_it = yield from find_contact(name)
    if contact is None:
        yield from give_up(f"{name} is not in my contacts.")
        return
    sent = _parsed((yield Action(
        f"{name}'s email is {contact['email']}. Transactions are listed newest first, "
        "so the first payment I sent them is the latest.",
        f"{name_it}transactions = apis.wallet.show_transactions(access_token=wallet_token, user_email=recipient[\"email\"], "
        "direction=\"sent\", page_limit=1)\nprint(transactions)",
    )), "listing transactions")
    if not sent:
        yield from give_up(f"I never sent money to {name}.")
        return
    yield from complete("transactions[0][\"amount\"]")


def answer_total_sent(task: Task) -> Solver:
    days = task.slots["days"]
    yield from read_doc("wallet", "show_transactions")
    yield from log_in()
    _parsed((yield Action(
        f"I add up every payment I sent since {days} days ago, going through all pages.",
        "from datetime import datetime, timedelta\n"
        f"since = (datetime.now() - timedelta(days={days})).isoformat()\n"
        "total = 0\n"
        "page_index = 0\n"
        "while True:\n"
        "    page = apis.wallet.show_transactions(access_token=wallet_token, direction=\"sent\", "
        "min_created_at=since, page_index=page_index)\n"
        "    if not page:\n"
        "        break\n"
        "    total += sum(t[\"amount\"] for t in page)\n"
        "    page_index += 1\n"
        "total = round(total, 2)\n"
        "print(total)",
    )), "adding up payments")
    yield from complete("total")


def split_bill(task: Task) -> Solver:
    s = task.slots
    people = s["recipients"]
    share = round(s["total"] / (len(people) + 1), 2)
    yield from read_doc("wallet", "create_payment_request")
    yield from log_in()
    name_them = ""
    for number, name in enumerate(people, start=1):
        # each search's result is named in the next step's code, before `contacts` is overwritten
        contact, name_it = yield from find_contact(name, variable=f"person{number}", prefix=name_them)
        if contact is None:
            yield from give_up(f"{name} is not in my contacts.")
            return
        name_them = name_it
    names = ", ".join(f"person{n}" for n in range(1, len(people) + 1))
    step = yield Action(
        f"The bill of ${format_amount(s['total'])} split {len(people) + 1} ways is ${format_amount(share)} each; "
        "I request that share from each of them.",
        f"{name_them}for person in [{names}]:\n"
        f"    print(apis.wallet.create_payment_request(access_token=wallet_token, user_email=person[\"email\"], "
        f"amount={format_amount(share)}, description={q(s['note'])}))",
    )
    if not step.ok:
        raise ExpertError(f"its step failed while requesting shares: {_last_line(step.observation)}")
    yield from complete()


INTENTS = {
    "send_money": (SendMoneySlots, send_money),
    "request_money": (RequestMoneySlots, request_money),
    "add_balance": (AddBalanceSlots, add_balance),
    "approve_request": (AnswerRequestSlots, answer_request),
    "deny_request": (AnswerRequestSlots, answer_request),
    "pay_back_largest": (NoSlots, pay_back),
    "pay_back_oldest": (NoSlots, pay_back),
    "answer_balance": (NoSlots, answer_balance),
    "answer_last_sent": (LastSentSlots, answer_last_sent),
    "answer_total_sent": (TotalSentSlots, answer_total_sent),
    "split_bill": (SplitBillSlots, split_bill),
}


def solve(task: Task) -> Solver:
    """The expert's plan for one task, as a generator: it yields actions and is sent their steps.

    Raises ExpertError, with the reason in one line, when the task's slots do not state a request it can plan.
    """
    if not task.slots:
        raise ExpertError(f"the task has no slots; the expert plans from slots with an intent, "
                          f"one of {', '.join(INTENTS)}")
    intent = task.slots.get("intent")
    if not isinstance(intent, str) or intent not in INTENTS:
        raise ExpertError(f"slots.intent {json.dumps(intent, default=str)} is not an intent the expert knows; "
                          f"use one of {', '.join(INTENTS)}")
    model, solver = INTENTS[intent]
    try:
        model.model_validate(task.slots)
    except ValidationError as error:
        raise ExpertError(f"the slots of intent {intent} {_slot_problem(error, task.slots)}") from None
    return _restating(solver(task), restate(task.slots))


def restate(slots: dict) -> str:
    """The request in one canonical sentence, however the instruction phrased it.

    The expert's first thought starts with it. A model trained on these episodes learns to turn any
    phrasing into this sentence once, at its first step; every later decision (which API, which
    arguments) can then read the same few words in its own earlier reply, instead of parsing the
    instruction again at every step.
    """
    intent, s = slots["intent"], slots
    amount = f"${format_amount(s['amount'])}" if "amount" in s else ""
    if intent == "send_money":
        who = s.get("recipient") or f"my contact with phone number {s['phone_number']}"
        text = f"send {amount} to {who}" + (f" for {s['note']}" if s.get("note") else "")
        text += ", privately" if s.get("private") else ""
        text += f", paid with my card ending in {s['card_last4']}" if s.get("card_last4") else ""
    elif intent == "request_money":
        text = f"request {amount} from {s['recipient']} for {s['note']}"
    elif intent == "add_balance":
        text = f"add {amount} to my wallet from my card ending in {s['card_last4']}"
    elif intent in ("approve_request", "deny_request"):
        text = f"{intent.split('_')[0]} the pending payment request from {s['recipient']}"
    elif intent in ("pay_back_largest", "pay_back_oldest"):
        text = f"pay the {intent.rsplit('_', 1)[1]} pending payment request I received"
    elif intent == "answer_balance":
        text = "tell my wallet balance"
    elif intent == "answer_last_sent":
        text = f"tell how much I sent {s['recipient']} the last time I paid them"
    elif intent == "answer_total_sent":
        text = f"tell how much I sent in total in the last {s['days']} days"
    else:  # split_bill
        text = f"request an equal share of ${format_amount(s['total'])} for {s['note']} from " + " and ".join(s["recipients"])
    return f"Task: {text}."


def _restating(solver: Solver, request: str) -> Solver:
    """The solver's steps, its first thought opened by the restated request."""
    action = next(solver)
    action = dataclasses.replace(action, thought=f"{request} {action.thought}")
    while True:
        step = yield action
        try:
            action = solver.send(step)
        except StopIteration:
            return


def _slot_problem(error: ValidationError, slots: dict) -> str:
    problem = error.errors()[0]
    loc = user_location(problem["loc"], slots, problem["type"] == "missing")
    field = field_path(("slots",) + loc)
    if problem["type"] == "missing":
        return f"need '{field}'"
    if problem["type"] == "extra_forbidden":
        takes = [name for name in INTENTS[slots["intent"]][0].model_fields if name != "intent"]
        return f"do not include '{field}' (it takes {', '.join(takes) or 'no other slots'})"
    message = str(problem["ctx"]["error"]) if problem["type"] == "value_error" else problem["msg"]
    return f"are unusable: '{field}': {message}" if loc else f"are unusable: {message}"
