"""A scripted expert that solves every task like a careful agent, one thought and one code step at a time.

It reads the request stated by the instruction (`task.slots`), never the checks; it learns
everything else (emails, ids, balances) from the observations of the code it runs in the
sandbox. It is the offline teacher of the data notebooks and the upper bound in evaluation.
"""
from __future__ import annotations

import json
from typing import Generator, Sequence

from helpers.episode import Action, Step
from helpers.tasks.schema import Task
from helpers.tasks.worlds import format_amount

Solver = Generator["Action", Step, None]  # yields actions, is sent each action's step


class ExpertError(RuntimeError):
    """The expert met an observation it cannot handle: a bug in the world, the tasks or the expert."""


class ExpertPolicy:
    """Stateless: the next action is a function of the request and the observations so far."""

    name = "expert"

    def act(self, task: Task, history: Sequence[Step]) -> Action:
        solver = solve(task)
        action = next(solver)
        for step in history:
            try:
                action = solver.send(step)
            except StopIteration:
                raise ExpertError(f"{task.id}: the expert has no step after completing the task.") from None
        return action

    def act_batch(self, tasks: Sequence[Task], histories: Sequence[Sequence[Step]]) -> list[Action]:
        return [self.act(task, history) for task, history in zip(tasks, histories)]


def q(value) -> str:
    """A Python literal for a value that appears in generated code."""
    return json.dumps(value)


def _parsed(step: Step, what: str):
    if not step.ok:
        raise ExpertError(f"expert step failed while {what}: {step.observation}")
    return json.loads(step.observation)


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
        raise ExpertError(f"login failed: {step.observation}")


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
        raise ExpertError(f"expert step failed while requesting shares: {step.observation}")
    yield from complete()


SOLVERS = {
    "send_money": send_money,
    "request_money": request_money,
    "add_balance": add_balance,
    "approve_request": answer_request,
    "deny_request": answer_request,
    "pay_back_largest": pay_back,
    "pay_back_oldest": pay_back,
    "answer_balance": answer_balance,
    "answer_last_sent": answer_last_sent,
    "answer_total_sent": answer_total_sent,
    "split_bill": split_bill,
}


def solve(task: Task) -> Solver:
    """The expert's plan for one task, as a generator: it yields actions and is sent their steps."""
    intent = task.slots.get("intent")
    if intent not in SOLVERS:
        raise ExpertError(f"{task.id}: the expert needs slots with a known intent, got {intent!r}.")
    return SOLVERS[intent](task)
