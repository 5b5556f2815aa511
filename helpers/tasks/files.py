"""Reading and writing task files (JSONL): any problem in a file is one sentence naming the line and the field."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ValidationError

from helpers.tasks.schema import CHECK_TYPES, Task

_SURROGATES = re.compile("[\ud800-\udfff]")  # json reads "\ud800" escapes into text no file can hold
# a task nests about 6 levels deep; far deeper is a broken file, and would exhaust the recursion limit later
MAX_DEPTH = 32
_CHECK_MODELS = {model.model_fields["type"].default: model for model in CHECK_TYPES}
# what the world's field patterns mean, for the message (keyed by the pattern pydantic reports)
_PATTERNS = {r"^\d{16}$": "16 digits, e.g. \"4000000000001234\"", r"^\d{2}/\d{2}$": "month/year, e.g. \"01/29\""}


class TaskFileError(ValueError):
    """A task file that cannot be read; the message names the file, the line and the field."""


def save_tasks(tasks: Iterable[Task], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for task in tasks:
            f.write(task.model_dump_json(exclude_defaults=False) + "\n")
    return path


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSONL task file; any problem raises TaskFileError with one clear sentence."""
    path = Path(path)
    tasks, seen = [], set()
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        task = _parse(line, f"{path} line {number}")
        if task.id in seen:
            raise TaskFileError(f"{path} line {number}: field 'id': task id '{task.id}' appears twice; "
                                "give every task its own variant number.")
        seen.add(task.id)
        tasks.append(task)
    if not tasks:
        raise TaskFileError(f"Task file {path} holds no tasks: write one JSON task per line.")
    return tasks


def _lines(path: Path) -> list[str]:
    """The file's lines as text; a file that is missing, a folder, unreadable or not UTF-8 is one sentence."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.jsonl"))
        hint = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside else ""
        raise TaskFileError(f"{path} is a folder, not a task file: give the path of a .jsonl file{hint}.")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        start = "" if path.is_absolute() else f" (a relative path starts at {Path.cwd()})"
        raise TaskFileError(f"Task file {path} does not exist: check the path{start}.") from None
    except OSError as error:
        raise TaskFileError(f"Task file {path} cannot be read ({error.strerror or error}).") from None
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # a byte-order mark, as some editors write, is harmless
    text = []
    for number, raw in enumerate(lines, start=1):
        try:
            text.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise TaskFileError(f"{path} line {number} is not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                                f"{error.start + 1}): save the file with the UTF-8 encoding.") from None
    return text


def _parse(line: str, where: str) -> Task:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise TaskFileError(f"{where}: not valid JSON ({error.msg} at column {error.colno}).") from None
    except RecursionError:
        raise TaskFileError(f"{where}: nested far too deeply; a task needs at most {MAX_DEPTH} levels.") from None
    if not isinstance(record, dict):
        raise TaskFileError(f"{where}: a task is a JSON object {{...}}, not {_kind(record)}.")
    problem = _raw_problem(record)
    if problem is not None:
        raise TaskFileError(f"{where}: {problem}")
    try:
        # strict: "25" is not the number 25, nor "true" a boolean; in JSON mode timestamps are still read from text
        return Task.model_validate_json(line, strict=True)
    except ValidationError as error:
        raise TaskFileError(f"{where}: {validation_problem(error, record)}") from None


def _raw_problem(record: dict) -> str | None:
    """What JSON allows but a task cannot hold: NaN or Infinity (json reads them; 1e999 is Infinity), deep nesting."""
    stack = [(record, ())]
    while stack:
        value, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return f"field '{field_path(loc[:3])}...' nests {len(loc)}+ levels deep; a task needs at most {MAX_DEPTH}."
        if isinstance(value, str) and _SURROGATES.search(value):
            return (f"field '{field_path(loc)}' holds a lone surrogate escape (like \\ud800), which is not text; "
                    "write the character itself or remove it.")
        if isinstance(value, float) and not math.isfinite(value):
            return (f"field '{field_path(loc)}': {json.dumps(value)} is not a number a task can use; "
                    "write a finite number.")
        if isinstance(value, dict):
            odd = next((key for key in value if _SURROGATES.search(key)), None)
            if odd is not None:
                where = f"'{field_path(loc)}'" if loc else "the task"
                return f"a field name in {where} holds a lone surrogate escape (like \\ud800); remove it."
            stack.extend((item, loc + (key,)) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((item, loc + (index,)) for index, item in reversed(list(enumerate(value))))
    return None


def field_path(loc: Iterable) -> str:
    """A location as the user wrote it in JSON: checks[0].amount."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def user_location(loc: tuple, record, missing: bool = False) -> tuple:
    """Pydantic's error location without the parts it adds (a check's type tag, a union member's type name):
    keep each part that names a key or an index of what the user wrote, and, if `missing`, the field at the end."""
    kept, value = [], record
    for position, part in enumerate(loc):
        if isinstance(value, dict) and part in value or isinstance(value, list) and isinstance(part, int) \
                and 0 <= part < len(value):
            kept.append(part)
            value = value[part]
        elif missing and isinstance(value, dict) and position == len(loc) - 1:
            kept.append(part)  # a missing field
    return tuple(kept)


def validation_problem(error: ValidationError, record) -> str:
    """One sentence for the most useful problem pydantic found in `record` (the data as the user wrote it)."""
    # an unknown field usually explains a missing one (a misspelt name), so it is reported first
    problems = sorted(error.errors(), key=lambda p: p["type"] != "extra_forbidden")
    problem = problems[0]
    kind, ctx, given = problem["type"], problem.get("ctx") or {}, problem.get("input")
    # our own validators name the field in ctx when pydantic's location cannot (a check in a model validator)
    loc = tuple(ctx["loc"]) if "loc" in ctx else user_location(problem["loc"], record, kind == "missing")
    field = field_path(loc)
    if kind == "missing":
        fields = _fields_of(loc, record) if len(loc) > 1 else None  # a task's own fields are in docs/your-own-tasks.md
        return f"field '{field}' is missing" + (f" ({fields})." if fields else ".")
    if kind == "extra_forbidden":
        fields = _fields_of(loc, record)
        return (f"field '{field}' is not a field of {_owner(loc, record)}; remove it or check its spelling"
                + (f": {fields}." if fields else "."))
    if kind == "union_tag_invalid":
        return (f"field '{field_path(loc + ('type',))}': {ctx['tag']!r} is not a check type; use one of "
                f"{', '.join(_CHECK_MODELS)}.")
    if kind == "union_tag_not_found":
        return f"field '{field}' has no \"type\"; give one of {', '.join(_CHECK_MODELS)}."
    if kind in ("float_type", "int_type", "bool_type") and isinstance(given, str):
        return f"field '{field}': {json.dumps(given)} is text; {_TYPE_WORDS[kind]} without quotes."
    if kind.startswith("datetime"):
        return f"field '{field}': {json.dumps(given)} is not a timestamp; write one like \"2026-03-14T10:00:00\"."
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERNS:
        return f"field '{field}': {given!r} should be {_PATTERNS[ctx['pattern']]}."
    if kind == "json_invalid":
        return f"not valid JSON ({ctx.get('error', problem['msg'])})."
    message = problem["msg"]
    if kind == "value_error" and "error" in ctx:
        message = str(ctx["error"])  # without pydantic's "Value error, " prefix
    return f"field '{field}': {message}." if field else f"{message}."


_TYPE_WORDS = {"float_type": "write the number", "int_type": "write the whole number",
               "bool_type": "write true or false"}


def _check_model(loc: tuple, record) -> type[BaseModel] | None:
    if len(loc) >= 2 and loc[0] == "checks" and isinstance(loc[1], int):
        try:
            return _CHECK_MODELS.get(record["checks"][loc[1]].get("type"))
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
    return None


def _owner(loc: tuple, record) -> str:
    model = _check_model(loc, record)
    if model is not None and len(loc) == 3:
        return f"a {model.model_fields['type'].default} check"
    if len(loc) == 1:
        return "a task"
    return f"'{field_path(loc[:-1])}'"


def _fields_of(loc: tuple, record) -> str | None:
    """For a field of a check or of the task itself: the fields it takes, so the user sees the right spelling."""
    model = _check_model(loc, record)
    if model is not None and len(loc) == 3:
        names = [name for name in model.model_fields if name != "type"]
        return f"a {model.model_fields['type'].default} check has the fields {', '.join(names)}"
    if len(loc) == 1:
        return f"a task has the fields {', '.join(Task.model_fields)}"
    return None


def _kind(value) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
