"""Grading a finished episode: compare the final world with the initial one, check by check."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from helpers.tasks.schema import (
    AnswerIs, BalanceAdded, NoOtherChanges, PaymentRequestMade, RequestStatus, StatusIs, Task, TransactionMade,
)
from helpers.world.state import WorldState


@dataclass(frozen=True)
class Change:
    """One difference between the initial and final world: a new record or a new request status."""

    kind: str  # transaction | payment_request | request_status | top_up
    record: object

    def describe(self) -> str:
        r = self.record
        if self.kind == "transaction":
            return f"payment of ${r.amount:.2f} to {r.receiver_email}"
        if self.kind == "payment_request":
            return f"request of ${r.amount:.2f} from {r.payer_email}"
        if self.kind == "request_status":
            return f"request {r.payment_request_id} {r.status}"
        return f"top-up of ${r.amount:.2f} from card {r.payment_card_id}"


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class TaskResult:
    task_id: str
    scenario_id: str
    scenario: str
    difficulty: int
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def pass_pct(self) -> float:
        return 100.0 * sum(c.passed for c in self.checks) / len(self.checks)


def world_changes(initial: WorldState, final: WorldState) -> list[Change]:
    """Every record added, and every payment-request status changed, between two states."""
    before_tx = {t.transaction_id for t in initial.wallet.transactions}
    before_top = {t.top_up_id for t in initial.wallet.top_ups}
    before_req = {r.payment_request_id: r.status for r in initial.wallet.payment_requests}
    changes = [Change("transaction", t) for t in final.wallet.transactions if t.transaction_id not in before_tx]
    changes += [Change("top_up", t) for t in final.wallet.top_ups if t.top_up_id not in before_top]
    for request in final.wallet.payment_requests:
        if request.payment_request_id not in before_req:
            changes.append(Change("payment_request", request))
        elif before_req[request.payment_request_id] != request.status:
            changes.append(Change("request_status", request))
    return changes


def normalize_answer(value) -> float | str | None:
    """Numbers to the cent, text lower-cased without currency signs, separators or a final period."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return round(float(value), 2)
    text = re.sub(r"\s+", " ", str(value).strip().lower()).rstrip(".")
    number = text.replace("$", "").replace(",", "").replace("usd", "").replace("dollars", "").strip()
    try:
        return round(float(number), 2)
    except ValueError:
        return text or None


def answers_match(given, expected) -> bool:
    a, b = normalize_answer(given), normalize_answer(expected)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 0.005
    return a == b


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answer_contains(given, expected) -> bool:
    """The answer states `expected` somewhere: a number written anywhere in it (to the cent), or the text as
    whole words ("Bob Ray" in "It was Bob Ray.", not "ann" in "Joanne")."""
    if given is None or expected is None:
        return given is expected
    b = normalize_answer(expected)
    if isinstance(b, float):
        numbers = [float(n.replace(",", "")) for n in _NUMBER.findall(str(given))]
        return any(abs(n - b) < 0.005 for n in numbers)
    text = re.sub(r"\s+", " ", str(given).strip().lower())
    return re.search(rf"(?<!\w){re.escape(b)}(?!\w)", text) is not None


def answer_accepted(check: AnswerIs, given) -> bool:
    """Whether the answer given satisfies the check: any of its alternatives, exactly or contained."""
    compare = answer_contains if check.match == "contains" else answers_match
    return any(compare(given, expected) for expected in check.alternatives)


def _money_equal(a: float, b: float) -> bool:
    return abs(a - b) < 0.005


def _matches(check, change: Change, supervisor_email: str) -> bool:
    r = change.record
    if isinstance(check, TransactionMade):
        return (change.kind == "transaction" and r.sender_email == supervisor_email
                and r.receiver_email.lower() == check.receiver_email.lower() and _money_equal(r.amount, check.amount)
                and (check.description_contains is None
                     or check.description_contains.lower() in r.description.lower())
                and (check.private is None or r.private == check.private)
                and (check.payment_card_id is None or r.payment_card_id == check.payment_card_id))
    if isinstance(check, PaymentRequestMade):
        return (change.kind == "payment_request" and r.payer_email.lower() == check.payer_email.lower()
                and _money_equal(r.amount, check.amount)
                and (check.description_contains is None
                     or check.description_contains.lower() in r.description.lower()))
    if isinstance(check, RequestStatus):
        return change.kind == "request_status" and r.payment_request_id == check.payment_request_id \
            and r.status == check.status
    if isinstance(check, BalanceAdded):
        return change.kind == "top_up" and r.payment_card_id == check.payment_card_id \
            and _money_equal(r.amount, check.amount)
    return False


def _name(check) -> str:
    if isinstance(check, TransactionMade):
        extras = [f"note '{check.description_contains}'" if check.description_contains else "",
                  "private" if check.private else "",
                  f"card {check.payment_card_id}" if check.payment_card_id is not None else ""]
        extra = ", ".join(e for e in extras if e)
        return f"paid ${check.amount:.2f} to {check.receiver_email}" + (f" ({extra})" if extra else "")
    if isinstance(check, PaymentRequestMade):
        return f"requested ${check.amount:.2f} from {check.payer_email}"
    if isinstance(check, RequestStatus):
        return f"request {check.payment_request_id} {check.status}"
    if isinstance(check, BalanceAdded):
        return f"added ${check.amount:.2f} from card {check.payment_card_id}"
    if isinstance(check, AnswerIs):
        verb = "contains" if check.match == "contains" else "is"
        if isinstance(check.expected, list):
            return f"answer {verb} one of {', '.join(repr(e) for e in check.expected)}"
        return f"answer {verb} {check.expected!r}"
    if isinstance(check, StatusIs):
        return f"completed with status '{check.expected}'"
    return "no other changes"


def _claim(task: Task, changes: list[Change]) -> dict[int, int]:
    """Match each positive check to the first unclaimed change it accepts: {check index: change index}."""
    claimed: dict[int, int] = {}
    supervisor = task.world.supervisor.email
    for number, check in enumerate(task.checks):
        index = next((i for i, c in enumerate(changes)
                      if i not in claimed.values() and _matches(check, c, supervisor)), None)
        if index is not None:
            claimed[number] = index
    return claimed


def unclaimed_changes(task: Task, state: WorldState) -> list[Change]:
    """Changes so far that no check of the task asks for: collateral damage if the episode ended now."""
    changes = world_changes(task.world, state)
    claimed = set(_claim(task, changes).values())
    return [c for i, c in enumerate(changes) if i not in claimed]


def grade(task: Task, final: WorldState, completion: dict | None) -> TaskResult:
    """Run every check of the task on the final state; a change may satisfy only one check."""
    changes = world_changes(task.world, final)
    claimed = _claim(task, changes)
    result = TaskResult(task.id, task.scenario_id, task.scenario, task.difficulty)
    answer = completion.get("answer") if completion else None
    for number, check in enumerate(task.checks):
        if isinstance(check, AnswerIs):
            ok = completion is not None and answer_accepted(check, answer)
            detail = "task not completed" if completion is None else f"answer given: {answer!r}"
        elif isinstance(check, StatusIs):
            status = completion["status"] if completion else None
            ok, detail = status == check.expected, f"status: {status or 'never completed'}"
        elif isinstance(check, NoOtherChanges):
            continue  # judged once the positive checks have claimed their changes
        else:
            ok = number in claimed
            detail = "" if ok else "no matching change in the world"
        result.checks.append(CheckResult(_name(check), ok, detail))
    if any(isinstance(c, NoOtherChanges) for c in task.checks):
        extra = [c.describe() for i, c in enumerate(changes) if i not in claimed.values()]
        result.checks.append(CheckResult(_name(NoOtherChanges()), not extra,
                                         "unexpected: " + "; ".join(extra) if extra else ""))
    return result
