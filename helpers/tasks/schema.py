"""What a task is (instruction, initial world, declarative checks) and how task files are read and written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helpers.world.state import WorldState


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransactionMade(_Check):
    """A new payment from the supervisor to `receiver_email` of exactly `amount` exists."""

    type: Literal["transaction_made"] = "transaction_made"
    receiver_email: str
    amount: float
    description_contains: str | None = None
    private: bool | None = None
    payment_card_id: int | None = None


class PaymentRequestMade(_Check):
    """A new request asking `payer_email` to pay the supervisor `amount` exists."""

    type: Literal["payment_request_made"] = "payment_request_made"
    payer_email: str
    amount: float
    description_contains: str | None = None


class RequestStatus(_Check):
    """An existing payment request ended with the given status."""

    type: Literal["request_status"] = "request_status"
    payment_request_id: int
    status: Literal["approved", "denied"]


class BalanceAdded(_Check):
    """Money was moved from the given card into the wallet balance."""

    type: Literal["balance_added"] = "balance_added"
    payment_card_id: int
    amount: float


class AnswerIs(_Check):
    """The answer given to complete_task matches (numbers to the cent, text case-insensitively)."""

    type: Literal["answer"] = "answer"
    expected: str | float | None


class StatusIs(_Check):
    """The task was completed with this status."""

    type: Literal["status"] = "status"
    expected: Literal["success", "fail"] = "success"


class NoOtherChanges(_Check):
    """Nothing changed in the world except what the other checks expect (no collateral damage)."""

    type: Literal["no_other_changes"] = "no_other_changes"


Check = Annotated[
    Union[TransactionMade, PaymentRequestMade, RequestStatus, BalanceAdded, AnswerIs, StatusIs, NoOtherChanges],
    Field(discriminator="type"),
]


class Task(BaseModel):
    """One graded task: AppWorld-style id `<scenario_id>_<variant>`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9-]+_\d+$")
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

    @model_validator(mode="after")
    def _id_names_scenario(self) -> "Task":
        if not self.id.startswith(self.scenario_id + "_"):
            raise ValueError(f"id '{self.id}' must be '<scenario_id>_<variant>' with scenario_id '{self.scenario_id}'")
        return self


class TaskFileError(ValueError):
    """A task file that cannot be read; the message names the file, the line and the field."""


def save_tasks(tasks: Iterable[Task], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for task in tasks:
            f.write(task.model_dump_json(exclude_defaults=False) + "\n")
    return path


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSONL task file; any problem raises TaskFileError with one clear sentence."""
    path = Path(path)
    if not path.exists():
        raise TaskFileError(f"Task file {path} does not exist.")
    tasks, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskFileError(f"{path} line {number}: not valid JSON ({error.msg} at column {error.colno}).") from None
        try:
            task = Task.model_validate(record)
        except ValidationError as error:
            raise TaskFileError(f"{path} line {number}: {_first_problem(error)}") from None
        if task.id in seen:
            raise TaskFileError(f"{path} line {number}: field 'id': task id '{task.id}' appears twice.")
        seen.add(task.id)
        tasks.append(task)
    if not tasks:
        raise TaskFileError(f"Task file {path} holds no tasks.")
    return tasks


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    # pydantic names the union member in discriminated unions (checks.0.answer.expected); drop it
    location = ".".join(str(part) for part in problem["loc"] if part not in _CHECK_TYPES)
    message = problem["msg"]
    if problem["type"] == "missing":
        return f"field '{location}' is missing."
    if not location:
        return f"{message}."
    return f"field '{location}': {message}."


_CHECK_TYPES = {"transaction_made", "payment_request_made", "request_status", "balance_added", "answer",
                "status", "no_other_changes"}
