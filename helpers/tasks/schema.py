"""What a task is: an instruction, an initial world, and declarative checks that refer only to that world."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from helpers.world.state import WorldState


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TransactionMade(_Check):
    """A new payment from the supervisor to `receiver_email` of exactly `amount` exists."""

    type: Literal["transaction_made"] = "transaction_made"
    receiver_email: str
    amount: float = Field(gt=0)
    description_contains: str | None = None
    private: bool | None = None
    payment_card_id: int | None = None


class PaymentRequestMade(_Check):
    """A new request asking `payer_email` to pay the supervisor `amount` exists."""

    type: Literal["payment_request_made"] = "payment_request_made"
    payer_email: str
    amount: float = Field(gt=0)
    description_contains: str | None = None


class RequestStatus(_Check):
    """An existing payment request ended with the given status."""

    type: Literal["request_status"] = "request_status"
    payment_request_id: int
    status: Literal["approved", "denied"]

    @model_validator(mode="before")
    @classmethod
    def _status_is_one_field(cls, data: Any) -> Any:
        # "approved": true reads naturally but is not the schema; say which field it is
        if isinstance(data, dict) and "status" not in data:
            for word in ("approved", "denied"):
                if word in data:
                    raise PydanticCustomError(
                        "status_field", 'the outcome goes in the field "status": write "status": "{word}" instead of '
                                        '"{word}": {value}', {"word": word, "value": _json_text(data[word])})
        return data


class BalanceAdded(_Check):
    """Money was moved from the given card into the wallet balance."""

    type: Literal["balance_added"] = "balance_added"
    payment_card_id: int
    amount: float = Field(gt=0)


Answer = Union[str, float, None]


class AnswerIs(_Check):
    """The answer given to complete_task matches `expected`, or one of its alternatives if it is a list.

    `match: exact` compares numbers to the cent and text ignoring case, currency signs and a final
    period; `match: contains` accepts an answer that states the expected value somewhere (a number
    anywhere in it, or the text as whole words).
    """

    type: Literal["answer"] = "answer"
    expected: Answer | list[Union[str, float]] = Field(union_mode="left_to_right")
    match: Literal["exact", "contains"] = "exact"

    @field_validator("expected")
    @classmethod
    def _alternatives_not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise PydanticCustomError("no_alternatives", "an empty list accepts no answer: give at least one")
        return value

    @property
    def alternatives(self) -> list:
        return self.expected if isinstance(self.expected, list) else [self.expected]


class StatusIs(_Check):
    """The task was completed with this status."""

    type: Literal["status"] = "status"
    expected: Literal["success", "fail"] = "success"


class NoOtherChanges(_Check):
    """Nothing changed in the world except what the other checks expect (no collateral damage)."""

    type: Literal["no_other_changes"] = "no_other_changes"


CHECK_TYPES = (TransactionMade, PaymentRequestMade, RequestStatus, BalanceAdded, AnswerIs, StatusIs, NoOtherChanges)
Check = Annotated[Union[CHECK_TYPES], Field(discriminator="type")]

_SCENARIO_ID = re.compile(r"[A-Za-z0-9-]+")
_TASK_ID = re.compile(r"([A-Za-z0-9-]+)_(\d+)")
ID_RULE = ("an id is <scenario_id>_<variant>, where the scenario id has only letters, digits and hyphens and the "
           "variant is a number, e.g. 'my-task_1' or 'a1b2c3d_2'")


class Task(BaseModel):
    """One graded task: AppWorld-style id `<scenario_id>_<variant>`."""

    model_config = ConfigDict(extra="forbid")

    id: str
    scenario_id: str
    scenario: str = Field(description="the scenario type, e.g. send_by_name")
    difficulty: int = Field(ge=1, le=3)
    instruction: str = Field(min_length=1)
    world: WorldState
    checks: list[Check] = Field(min_length=1)
    slots: dict[str, Any] = Field(
        default_factory=dict,
        description="the request the instruction states, as data; read by the scripted expert, never by grading",
    )

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _TASK_ID.fullmatch(value):
            raise PydanticCustomError("task_id", "{value} is not a task id: {rule}",
                                      {"value": repr(value), "rule": ID_RULE})
        return value

    @field_validator("scenario_id")
    @classmethod
    def _scenario_id_shape(cls, value: str) -> str:
        if not _SCENARIO_ID.fullmatch(value):
            raise PydanticCustomError("scenario_id", "{value} is not a scenario id: use letters, digits and hyphens "
                                                     "only (no underscore), e.g. 'my-task'", {"value": repr(value)})
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Task":
        if not self.id.startswith(self.scenario_id + "_"):
            raise PydanticCustomError(
                "id_scenario", "id {id} must be '<scenario_id>_<variant>' with scenario_id {sid}, e.g. {example}",
                {"id": repr(self.id), "sid": repr(self.scenario_id), "example": repr(self.scenario_id + "_1"),
                 "loc": ("id",)})
        if all(isinstance(check, NoOtherChanges) for check in self.checks):
            raise PydanticCustomError(
                "only_no_changes", "a task needs a check besides no_other_changes, or doing nothing would pass it; "
                                   "add e.g. {example}",
                {"example": '{"type": "status", "expected": "success"}', "loc": ("checks",)})
        problem = unknown_reference(self)
        if problem is not None:
            loc, message = problem
            raise PydanticCustomError("unknown_reference", "{message}", {"message": message, "loc": loc})
        _drop_time_zones(self.world)
        return self


def unknown_reference(task: Task) -> tuple[tuple, str] | None:
    """The first email or id named by a check that the task's world does not have, as (location, why), or None.

    A typo there makes a task silently impossible, so it is refused when the task is read.
    """
    world = task.world
    users = {u.email.lower() for u in world.wallet.users}
    cards = {c.payment_card_id for c in world.payment_cards}
    requests = {r.payment_request_id: r for r in world.wallet.payment_requests}
    for number, check in enumerate(task.checks):
        where = ("checks", number)
        for field in ("receiver_email", "payer_email"):
            email = getattr(check, field, None)
            if email is not None and email.lower() not in users:
                return where + (field,), (f"no wallet user of this task's world has the email {email!r} "
                                          f"(users: {', '.join(sorted(users))})")
        card = getattr(check, "payment_card_id", None)
        if card is not None and card not in cards:
            return where + ("payment_card_id",), (f"the world has no payment card {card} "
                                                  f"(cards: {', '.join(map(str, sorted(cards))) or 'none'})")
        if isinstance(check, RequestStatus):
            request = requests.get(check.payment_request_id)
            if request is None:
                return where + ("payment_request_id",), (
                    f"the world has no payment request {check.payment_request_id} "
                    f"(requests: {', '.join(map(str, sorted(requests))) or 'none'})")
            if request.status != "pending" or request.payer_email.lower() != world.supervisor.email.lower():
                return where + ("payment_request_id",), (
                    f"payment request {request.payment_request_id} cannot change status: only a pending request "
                    f"sent to the supervisor ({world.supervisor.email}) can be approved or denied")
    return None


def _json_text(value) -> str:
    return json.dumps(value) if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


def _drop_time_zones(model: BaseModel) -> None:
    """Timestamps with a zone (`Z`, `+02:00`) become UTC without one: the world's clock has no time zones,
    and comparing zoned with unzoned times fails inside date filters."""
    for name, value in model:
        if isinstance(value, datetime) and value.tzinfo is not None:
            setattr(model, name, value.astimezone(timezone.utc).replace(tzinfo=None))
        elif isinstance(value, BaseModel):
            _drop_time_zones(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    _drop_time_zones(item)
