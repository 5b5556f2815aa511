"""What one step of code did, as data: rewards, data filters and metrics read these fields, never the text."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a step failed. A StrEnum, so it is written to JSON and CSV as its plain value."""

    REFUSED = "refused"  # the static checks refused the code before it ran (imports, dunders, open, ...)
    SYNTAX = "syntax_error"
    EXCEPTION = "exception"  # the code raised (a NameError, a KeyError, a ZeroDivisionError, ...)
    API_ERROR = "api_error"  # an app refused a call and the code did not catch it
    TIME_LIMIT = "time_limit"
    CPU_LIMIT = "cpu_limit"
    MEMORY_LIMIT = "memory_limit"
    INTERNAL = "internal_error"  # the environment itself failed serving an API call
    SANDBOX_DIED = "sandbox_died"  # the worker process died or broke the protocol
    EPISODE_ENDED = "episode_ended"  # an earlier step ended the episode; nothing ran
    PARSE_ERROR = "parse_error"  # the model's reply held no code to run (set by the agent loop, not the sandbox)


@dataclass(frozen=True)
class ApiCall:
    """One call the code made to an app, and whether the app accepted it."""

    app: str
    api: str
    ok: bool


@dataclass(frozen=True)
class StepResult:
    """One executed step: success, why not, what was printed, which APIs were called, and the observation.

    `observation` is what the model reads next (printed output, then the error report if any); the
    other fields say the same as data. `ok` is False whenever the step raised, timed out or was refused,
    even if it printed something first.
    """

    ok: bool
    observation: str
    output: str = ""
    error_kind: ErrorKind | None = None
    error_message: str = ""
    api_calls: tuple[ApiCall, ...] = field(default_factory=tuple)
    episode_ended: bool = False  # no more code can run in this episode

    @property
    def successful_api_calls(self) -> int:
        return sum(call.ok for call in self.api_calls)

    @classmethod
    def failure(cls, kind: ErrorKind, message: str, observation: str, output: str = "",
                api_calls: tuple[ApiCall, ...] = (), episode_ended: bool = False) -> "StepResult":
        return cls(False, observation, output, ErrorKind(kind), message, tuple(api_calls), episode_ended)
