"""Declaring app APIs once: their parameters drive both argument validation and the API docs.

An app method becomes an API with the `@api(...)` decorator; each parameter is annotated
with `Annotated[type, Param(...)]`. The same declaration yields the JSON doc returned by
`apis.api_docs.show_api_doc` and the error messages a model sees for bad arguments.
"""
from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from helpers.world.errors import ApiError

_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Param:
    """Documentation and constraints of one API parameter."""

    description: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    max_decimals: int | None = None
    is_datetime: bool = False

    def constraints(self) -> list[str]:
        found = []
        if self.gt is not None:
            found.append(f"value > {self.gt:g}")
        if self.ge is not None:
            found.append(f"value >= {self.ge:g}")
        if self.le is not None:
            found.append(f"value <= {self.le:g}")
        if self.choices:
            found.append("value in [" + ", ".join(self.choices) + "]")
        if self.max_decimals is not None:
            found.append(f"at most {self.max_decimals} decimal places")
        if self.is_datetime:
            found.append("ISO date or datetime, e.g. 2026-03-01 or 2026-03-01T09:30:00")
        return found


@dataclass(frozen=True)
class ParamSpec:
    name: str
    types: tuple[type, ...]
    optional: bool  # None is accepted
    required: bool
    default: Any
    param: Param

    @property
    def type_name(self) -> str:
        return " | ".join(_TYPE_NAMES[t] for t in self.types)

    def doc(self) -> dict:
        doc = {"name": self.name, "type": self.type_name, "required": self.required,
               "description": self.param.description}
        if not self.required:
            doc["default"] = self.default
        if self.param.constraints():
            doc["constraints"] = self.param.constraints()
        return doc


@dataclass(frozen=True)
class ApiSpec:
    app: str
    name: str
    description: str
    params: tuple[ParamSpec, ...]
    response: Any
    needs_token: bool

    def doc(self) -> dict:
        return {
            "app_name": self.app,
            "api_name": self.name,
            "description": self.description,
            "parameters": [p.doc() for p in self.params],
            "response_schema": self.response,
        }


def api(description: str, response: Any):
    """Mark an app method as an API; its signature is read when the app class is built."""

    def mark(method: Callable) -> Callable:
        method.__api__ = (description, response)
        return method

    return mark


def collect_api_specs(app_name: str, app_cls: type) -> dict[str, ApiSpec]:
    """Read every `@api` method of an app class into an ApiSpec."""
    specs = {}
    for name, method in vars(app_cls).items():
        if not hasattr(method, "__api__"):
            continue
        description, response = method.__api__
        hints = typing.get_type_hints(method, include_extras=True)
        params = []
        for pname, parameter in inspect.signature(method).parameters.items():
            if pname == "self":
                continue
            base, meta = typing.get_args(hints[pname])
            members = typing.get_args(base) or (base,)
            optional = type(None) in members
            types = tuple(t for t in members if t is not type(None))
            required = parameter.default is inspect.Parameter.empty
            params.append(ParamSpec(pname, types, optional, required, None if required else parameter.default, meta))
        needs_token = any(p.name == "access_token" for p in params)
        specs[name] = ApiSpec(app_name, name, description, tuple(params), response, needs_token)
    return specs


def bind_arguments(spec: ApiSpec, args: list, kwargs: dict) -> dict:
    """Match positional and keyword arguments to the spec, validating each; raise ApiError if wrong."""
    where = f"{spec.app}.{spec.name}"
    if len(args) > len(spec.params):
        raise ApiError(f"{where} takes at most {len(spec.params)} arguments but {len(args)} were given.")
    names = [p.name for p in spec.params]
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            valid = ", ".join(names) or "none"
            raise ApiError(f"Unexpected parameter '{key}' for {where}. Valid parameters: {valid}.")
        if key in bound:
            raise ApiError(f"Parameter '{key}' of {where} was given twice.")
        bound[key] = value
    values = {}
    for p in spec.params:
        if p.name not in bound:
            if p.required:
                raise ApiError(f"Missing required parameter '{p.name}' ({p.type_name}) for {where}.")
            values[p.name] = p.default
            continue
        values[p.name] = _validate(where, p, bound[p.name])
    return values


def _validate(where: str, p: ParamSpec, value: Any) -> Any:
    label = f"Invalid value for parameter '{p.name}' of {where}"
    if value is None:
        if p.optional or (not p.required and p.default is None):
            return None
        raise ApiError(f"{label}: expected a {p.type_name}, got None.")
    if p.types == (float,) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if p.types == (int,) and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, p.types) or (bool not in p.types and isinstance(value, bool)):
        raise ApiError(f"{label}: expected a {p.type_name}, got {type(value).__name__} {value!r:.60}.")
    rule = p.param
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(f"{label}: expected a finite number, got {value!r}.")
    for bound, ok, text in (
        (rule.gt, lambda b: value > b, "greater than"),
        (rule.ge, lambda b: value >= b, "at least"),
        (rule.le, lambda b: value <= b, "at most"),
    ):
        if bound is not None and not ok(bound):
            raise ApiError(f"{label}: must be {text} {bound:g}, got {value:g}.")
    if rule.max_decimals is not None and round(value, rule.max_decimals) != value:
        raise ApiError(f"{label}: use at most {rule.max_decimals} decimal places, got {value!r}.")
    if rule.choices and value not in rule.choices:
        raise ApiError(f"{label}: must be one of {', '.join(rule.choices)}, got {value!r:.60}.")
    if rule.is_datetime:
        try:
            return datetime.fromisoformat(value).replace(tzinfo=None)
        except ValueError:
            raise ApiError(f"{label}: expected an ISO date like 2026-03-01, got {value!r:.60}.") from None
    return value
