"""The sandbox worker process: it confines itself, then runs model code step by step in one persistent namespace."""
from __future__ import annotations

import builtins
import datetime as real_datetime
import gc
import importlib
import json
import math
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection
from types import ModuleType

from helpers.sandbox.confinement import confine, take_channel
from helpers.sandbox.policy import (
    ALLOWED_MODULES, FAILED, HIDDEN_MODULE_MEMBERS, describe_syntax_error, source_line_report,
)
from helpers.sandbox.result import ErrorKind

# The parent and the worker exchange only JSON messages over one connection:
#   worker -> parent  {"op": "ready"} or {"op": "failed", "error"} once; then, per step, any number of
#                     {"op": "call", "app", "api", "args", "kwargs"} and finally {"op": "done", "result"}, where
#                     result is {"ok", "observation", "output", "error_kind", "error_message"}
#   parent -> worker  {"op": "exec", "code"}; each call is answered {"result"}, {"api_error"} or {"internal_error"}
STEP_FILENAME = "<step>"
RECURSION_LIMIT = 400
MAX_API_REQUEST_BYTES = 1_000_000
MAX_ERROR_MESSAGE_CHARS = 2_000
# After a step's time is up the signal repeats at this interval, so code that catches it once still stops.
REPEAT_LIMIT_SIGNAL_SECONDS = 0.05
SHOWN_TRACEBACK_LINES = 3  # at each end of a long traceback
# After a memory-limit error, variables that hold at least this much (counted through built-in containers)
# are dropped from the namespace; no task needs anything near it.
LARGE_VARIABLE_BYTES = 16 * 1024 * 1024
SIZE_WALK_OBJECTS = 1_000_000  # the walk that measures a variable stops after this many objects
SIZED_TYPES = (list, dict, set, frozenset, tuple, str, bytes, bytearray, int, float)  # no model code runs to size them
PROTECTED_NAMES = frozenset({"__builtins__", "__name__", "apis"})

# Everything model code may import is imported here, in the forkserver, so a worker never needs a file;
# so are the modules the standard library imports lazily on first use (strptime, a few codecs).
PRELOADED_MODULES = {name: importlib.import_module(name) for name in ALLOWED_MODULES}
for _lazily_imported in ("_strptime", "encodings.utf_16", "encodings.utf_32", "encodings.cp1252"):
    importlib.import_module(_lazily_imported)
real_datetime.datetime.now()  # makes the C library read the timezone before the worker loses the filesystem

SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr", "classmethod", "complex",
    "dict", "dir", "divmod", "enumerate", "filter", "float", "format", "frozenset", "hasattr", "hash", "hex", "id",
    "int", "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next", "object", "oct", "ord",
    "pow", "property", "range", "repr", "reversed", "round", "set", "slice", "sorted", "staticmethod", "str", "sum",
    "super", "tuple", "type", "zip", "NotImplemented", "Ellipsis", "__build_class__",
)
SAFE_BUILTINS = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
SAFE_BUILTINS.update({name: value for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)})


class TimeLimitExceeded(BaseException):
    """Raised inside model code when a step runs out of time; a BaseException so `except Exception` lets it pass."""

    def __init__(self, message: str, kind: ErrorKind):
        super().__init__(message)
        self.kind = kind


class EnvironmentFailure(BaseException):
    """The API handler in the parent failed; the step must end with that failure whatever the code catches."""


class ApiError(Exception):
    """An app refused an API call; the message is the app's, shown to the model as is."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SafeModule:
    """An allowed module as model code sees it: its public members that are not modules themselves."""

    def __init__(self, name: str, members: dict):
        self.__dict__.update(members)
        self.__name__ = name  # what `from json import nothing` names in its ImportError

    def __getattr__(self, name: str):
        raise AttributeError(f"module '{self.__name__}' has no attribute '{name}'")

    def __repr__(self) -> str:
        return f"<module '{self.__name__}'>"


def safe_module(module: ModuleType, replacements: dict | None = None) -> SafeModule:
    hidden = HIDDEN_MODULE_MEMBERS.get(module.__name__, frozenset())
    members = {name: value for name, value in vars(module).items()
               if not name.startswith("_") and not isinstance(value, ModuleType) and name not in hidden}
    members.update(replacements or {})
    return SafeModule(module.__name__, members)


_frozen_now: real_datetime.datetime | None = None  # the task's fixed time, set once per worker


# The two classes below are named like the originals, which they replace in the `datetime` model code imports.


class date(real_datetime.date):
    """`datetime.date` whose today() is the task's fixed date, so date questions are deterministic."""

    __slots__ = ()

    @classmethod
    def today(cls):
        current = _frozen_now or real_datetime.datetime.now()
        return cls(current.year, current.month, current.day)

    def __repr__(self) -> str:
        return "datetime." + super().__repr__()


class datetime(real_datetime.datetime):
    """`datetime.datetime` whose now()/today()/utcnow() are the task's fixed time."""

    __slots__ = ()

    @classmethod
    def now(cls, tz=None):
        if _frozen_now is None:
            return super().now(tz)
        fixed = _frozen_now
        current = cls(fixed.year, fixed.month, fixed.day, fixed.hour, fixed.minute, fixed.second, fixed.microsecond,
                      fixed.tzinfo)
        if tz is None:
            return current
        return current.replace(tzinfo=tz) if current.tzinfo is None else current.astimezone(tz)

    @classmethod
    def today(cls):
        return cls.now()

    @classmethod
    def utcnow(cls):
        return cls.now()

    def __repr__(self) -> str:
        return "datetime." + super().__repr__()


date.__module__ = datetime.__module__ = "datetime"

SAFE_MODULES = {name: safe_module(module) for name, module in PRELOADED_MODULES.items()}
SAFE_MODULES["datetime"] = safe_module(real_datetime, {"date": date, "datetime": datetime})


def to_printable(value) -> str:
    """print() shows dicts and lists as compact JSON, like the apps' responses, and other values as usual."""
    if isinstance(value, (dict, list)):
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):  # keys JSON cannot hold, or a container that contains itself
            return str(value)
    return str(value)


def _json_argument(value):
    if isinstance(value, (real_datetime.date, real_datetime.time)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class OutputBuffer:
    """Captured stdout of one step, keeping only what will be shown."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.total = 0

    def write(self, text: str) -> None:
        self.total += len(text)
        room = self.limit - self.kept
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)

    def text(self) -> str:
        shown = "".join(self.parts).rstrip("\n")
        if self.total > self.limit:
            shown += (f"\n[Output truncated: {self.total} characters were printed; "
                      f"only the first {self.limit} are shown.]")
        return shown


class Apis:
    """`apis` inside the sandbox: `apis.<app>.<api>(...)` is forwarded to the parent, which holds the apps."""

    __slots__ = ()

    def __getattr__(self, app: str):
        if app.startswith("_"):
            raise AttributeError(f"'apis' has no attribute '{app}': names starting with '_' are not apps")
        return AppApis(app)

    def __repr__(self) -> str:
        return "<apis: call apis.<app>.<api>(...)>"


class AppApis:
    __slots__ = ("app",)

    def __init__(self, app: str):
        self.app = app

    def __getattr__(self, api: str):
        if api.startswith("_"):
            raise AttributeError(f"'apis.{self.app}' has no attribute '{api}': names starting with '_' are not APIs")
        return ApiFunction(self.app, api)

    def __repr__(self) -> str:
        return f"<apis.{self.app}>"


class ApiFunction:
    __slots__ = ("app", "api")

    def __init__(self, app: str, api: str):
        self.app = app
        self.api = api

    def __call__(self, *args, **kwargs):
        return _session.call_api(self.app, self.api, list(args), kwargs)

    def __repr__(self) -> str:
        return f"<apis.{self.app}.{self.api}>"


_session: "Session | None" = None  # the one session of this process; model code has no way to name it


class Session:
    """One episode's interpreter state inside the confined worker."""

    def __init__(self, channel: Connection, config: dict):
        self.channel = channel
        self.wall_seconds = float(config["step_wall_seconds"])
        self.cpu_seconds = float(config["step_cpu_seconds"])
        self.output_chars = int(config["output_chars"])
        self.cpu_hard_seconds = int(config["cpu_hard_seconds"])
        global _frozen_now
        _frozen_now = real_datetime.datetime.fromisoformat(config["now"]) if config["now"] else None
        PRELOADED_MODULES["random"].seed(config["seed"])
        self.modules = SAFE_MODULES
        sandbox_builtins = dict(SAFE_BUILTINS, print=self.print, __import__=self.import_module)
        self.namespace = {"__builtins__": sandbox_builtins, "__name__": "__main__", "apis": Apis()}
        self.output = OutputBuffer(self.output_chars)
        self.step_running = False
        self.in_api_call = False
        self.deferred_signal: int | None = None
        self.unraisable: BaseException | None = None
        self.internal_error: str | None = None
        signal.signal(signal.SIGALRM, self.on_limit_signal)
        signal.signal(signal.SIGXCPU, self.on_limit_signal)
        sys.unraisablehook = self.on_unraisable
        sys.setrecursionlimit(RECURSION_LIMIT)

    # --- what model code calls -------------------------------------------------------------------

    def print(self, *values, sep=" ", end="\n", file=None, flush=False):
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("sep and end must be None or strings")
        text = sep.join(map(to_printable, values)) + end
        if file is None:
            self.output.write(text)
        else:
            file.write(text)

    def import_module(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name in self.modules:
            return self.modules[name]
        if level == 0 and name in sys.modules:
            # The standard library's C code imports through the caller's __import__ (datetime.strptime imports
            # _strptime) and then reads sys.modules itself: the call must succeed, but hands nothing out.
            return None
        raise ImportError(f"Module '{name}' is not available; the available modules are {', '.join(ALLOWED_MODULES)}")

    def call_api(self, app: str, api: str, args: list, kwargs: dict):
        try:
            request = json.dumps({"op": "call", "app": app, "api": api, "args": args, "kwargs": kwargs},
                                 default=_json_argument).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Arguments of apis.{app}.{api} must be JSON values (str, int, float, bool, None, "
                            f"list, dict): {exc}") from None
        if len(request) > MAX_API_REQUEST_BYTES:
            raise ValueError(f"The arguments of apis.{app}.{api} are too large ({len(request)} bytes).")
        # A limit signal must not interrupt the exchange half-way, or the next reply would answer the wrong call.
        self.in_api_call = True
        try:
            self.channel.send_bytes(request)
            raw_reply = self.channel.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone
        finally:
            self.in_api_call = False
        if self.deferred_signal is not None:
            signal_number, self.deferred_signal = self.deferred_signal, None
            raise self.limit_exceeded(signal_number)
        reply = json.loads(raw_reply)
        if "api_error" in reply:
            raise ApiError(reply["api_error"])
        if "internal_error" in reply:
            self.internal_error = reply["internal_error"]
            raise EnvironmentFailure(self.internal_error)
        return reply["result"]

    # --- limits --------------------------------------------------------------------------------------

    def limit_exceeded(self, signal_number: int) -> TimeLimitExceeded:
        if signal_number == signal.SIGXCPU:
            return TimeLimitExceeded(f"The step exceeded its CPU time limit of {self.cpu_seconds:g} seconds.",
                                     ErrorKind.CPU_LIMIT)
        return TimeLimitExceeded(f"The step exceeded its time limit of {self.wall_seconds:g} seconds.",
                                 ErrorKind.TIME_LIMIT)

    def on_limit_signal(self, signal_number, frame):
        if not self.step_running:
            return
        if self.in_api_call:
            self.deferred_signal = signal_number
            return
        raise self.limit_exceeded(signal_number)

    def on_unraisable(self, unraisable):
        if self.unraisable is None:  # e.g. raised in __del__: Python would only print it to stderr
            self.unraisable = unraisable.exc_value

    def arm_limits(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_soft = min(self.cpu_hard_seconds, math.ceil(usage.ru_utime + usage.ru_stime + self.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, self.cpu_hard_seconds))
        self.deferred_signal = None
        self.step_running = True
        signal.setitimer(signal.ITIMER_REAL, self.wall_seconds, REPEAT_LIMIT_SIGNAL_SECONDS)

    def disarm_limits(self) -> None:
        self.step_running = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    # --- one step ------------------------------------------------------------------------------------

    def run_step(self, code: str) -> dict:
        """Run one step; the result as data (see the protocol at the top) with the observation for the model."""
        self.output = OutputBuffer(self.output_chars)
        self.internal_error = None
        failure = None  # (kind, message, report)
        bound_before = {name: id(value) for name, value in self.namespace.items()}
        self.arm_limits()
        try:
            try:
                exec(compile(code, STEP_FILENAME, "exec"), self.namespace)
            except BaseException as exc:
                failure = self.describe_error(exc, code)
            if failure is None and self.unraisable is not None:
                failure = self.describe_error(self.unraisable, code)
        except BaseException as exc:  # the limit signal again, while the error was being described
            failure = (error_kind(exc), type(exc).__name__, f"{FAILED} {type(exc).__name__}")
        finally:
            self.disarm_limits()
        self.unraisable = None
        if self.internal_error is not None:
            message = f"Internal error in the environment: {self.internal_error}"
            failure = (ErrorKind.INTERNAL, message, f"{FAILED} {message}")
        output = self.output.text()
        if failure is None:
            return {"ok": True, "observation": output or "Execution successful.", "output": output,
                    "error_kind": None, "error_message": ""}
        kind, message, report = failure
        if kind == ErrorKind.MEMORY_LIMIT:
            removed = self.free_memory(bound_before)
            if removed:
                report += f"\nTo free memory, these variables were removed: {', '.join(removed)}."
        return {"ok": False, "observation": f"{output}\n{report}" if output else report, "output": output,
                "error_kind": kind.value, "error_message": message}

    def free_memory(self, bound_before: dict[str, int]) -> list[str]:
        """After a memory-limit error: drop what the step bound or rebound, and any very large container.

        Otherwise a list filled until memory ran out stays alive in the namespace and every later step
        of the episode fails for lack of memory.
        """
        removed = []
        for name, value in list(self.namespace.items()):
            if name in PROTECTED_NAMES:
                continue
            rebound = bound_before.get(name) != id(value)
            try:
                giant = rebound or holds_at_least(value, LARGE_VARIABLE_BYTES)
            except MemoryError:  # measuring needed memory there was none of: it is giant
                giant = True
            if giant:
                del self.namespace[name]
                removed.append(name)
        gc.collect()
        return removed

    def describe_error(self, exc: BaseException, code: str) -> tuple[ErrorKind, str, str]:
        """(kind, one-line message, the report the model reads) of an exception raised by a step."""
        if isinstance(exc, SyntaxError) and exc.filename == STEP_FILENAME:
            return ErrorKind.SYNTAX, f"{type(exc).__name__}: {exc.msg}", describe_syntax_error(exc)
        source_lines = code.splitlines()
        line_numbers = []
        traceback = exc.__traceback__
        while traceback is not None:
            in_step = traceback.tb_frame.f_code.co_filename == STEP_FILENAME
            if in_step and (not line_numbers or line_numbers[-1] != traceback.tb_lineno):
                line_numbers.append(traceback.tb_lineno)
            traceback = traceback.tb_next
        shown = [source_line_report(number, source_lines[number - 1] if 0 < number <= len(source_lines) else "")
                 for number in line_numbers]
        if len(shown) > 2 * SHOWN_TRACEBACK_LINES:
            hidden = len(shown) - 2 * SHOWN_TRACEBACK_LINES
            shown = shown[:SHOWN_TRACEBACK_LINES] + [f"  ... ({hidden} more)"] + shown[-SHOWN_TRACEBACK_LINES:]
        try:
            message = exc.message if isinstance(exc, ApiError) else str(exc)
        except BaseException:  # a model-defined exception whose __str__ fails or runs out of time
            message = "(its message could not be shown)"
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[:MAX_ERROR_MESSAGE_CHARS] + " [...]"
        summary = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        if not shown:
            return error_kind(exc), summary, f"{FAILED} {summary}"
        return error_kind(exc), summary, f"{FAILED} Traceback:\n" + "\n".join(shown) + "\n" + summary

    # --- the loop ------------------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        self.channel.send_bytes(json.dumps(message).encode())

    def serve_forever(self) -> None:
        self.send({"op": "ready"})
        while True:
            try:
                request = json.loads(self.channel.recv_bytes())
            except (EOFError, OSError):
                return
            if request.get("op") != "exec":
                return
            self.send({"op": "done", "result": self.run_step(request["code"])})


def holds_at_least(value, limit: int) -> bool:
    """Whether `value` keeps `limit` bytes alive through built-in containers (walked without running model code)."""
    total, seen, stack = 0, set(), [value]
    while stack and len(seen) < SIZE_WALK_OBJECTS:
        item = stack.pop()
        if type(item) not in SIZED_TYPES or id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if total >= limit:
            return True
        if type(item) is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) in (list, tuple, set, frozenset):
            stack.extend(item)
    return bool(stack)  # the walk gave up: a variable that large is giant too


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind of failure an exception that ended a step stands for."""
    if isinstance(exc, TimeLimitExceeded):
        return exc.kind
    if isinstance(exc, MemoryError):
        return ErrorKind.MEMORY_LIMIT
    if isinstance(exc, ApiError):
        return ErrorKind.API_ERROR
    if isinstance(exc, EnvironmentFailure):
        return ErrorKind.INTERNAL
    return ErrorKind.EXCEPTION


def serve(connection: Connection, config_json: str) -> None:
    """The worker process's entry point: confine, report ready, then run steps until the parent goes away."""
    global _session
    config = json.loads(config_json)
    channel = take_channel(connection)
    try:
        config["cpu_hard_seconds"] = confine(config["memory_mb"], config["step_cpu_seconds"],
                                            config["syscall_filter"])
        _session = Session(channel, config)
    except BaseException as exc:
        try:
            channel.send_bytes(json.dumps({"op": "failed", "error": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            os._exit(1)
    try:
        _session.serve_forever()
    finally:
        os._exit(0)
