"""Static checks on model code before it runs: what may be imported, named, and reached through attributes."""
from __future__ import annotations

import ast

from helpers.sandbox.result import ErrorKind, StepResult

ALLOWED_MODULES = (
    "json", "math", "re", "datetime", "collections", "itertools", "functools", "statistics", "decimal",
    "fractions", "random", "heapq", "bisect", "string", "operator",
)

# Public members of allowed modules that hand out arbitrary attribute access, or evaluate strings, by name:
# each is a way around the attribute checks below, so the sandbox's module wrappers leave them out.
HIDDEN_MODULE_MEMBERS = {
    "operator": frozenset({"attrgetter", "methodcaller"}),
    "string": frozenset({"Formatter"}),
    "functools": frozenset({"update_wrapper", "wraps", "singledispatch", "singledispatchmethod"}),
}

REFUSED_NAMES = {
    "open": "this environment has no file access",
    "eval": "write the code directly instead of running strings",
    "exec": "write the code directly instead of running strings",
    "compile": "write the code directly instead of running strings",
    "globals": "refer to variables by their names",
    "locals": "refer to variables by their names",
    "vars": "refer to variables by their names",
    "getattr": "use obj.attribute instead",
    "setattr": "use obj.attribute = value instead",
    "delattr": "use del obj.attribute instead",
    "input": "no one can type input here",
    "breakpoint": "this environment is not interactive",
    "help": "this environment is not interactive",
    "exit": "a step ends when its code ends",
    "quit": "a step ends when its code ends",
    "memoryview": "it gives raw access to memory",
}

# Attributes of generators, coroutines, frames, tracebacks and code objects that lead to other frames' globals.
BLOCKED_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "cr_origin",
    "ag_frame", "ag_code", "ag_await", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "f_trace",
    "tb_frame", "tb_next", "co_code", "co_consts", "func_globals", "func_code", "func_closure",
    "im_func", "im_self", "mro",
})

# Dunder methods a class body may define; everything else starting with '__' is refused.
ALLOWED_DUNDER_METHODS = frozenset({
    "__init__", "__repr__", "__str__", "__format__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
    "__hash__", "__bool__", "__len__", "__iter__", "__next__", "__contains__", "__getitem__", "__setitem__",
    "__delitem__", "__call__", "__enter__", "__exit__", "__del__", "__post_init__", "__add__", "__radd__",
    "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__floordiv__", "__mod__", "__neg__", "__abs__",
})

FAILED = "Execution failed."
MAX_SHOWN_SOURCE_CHARS = 200


def check_code(code: str, max_chars: int) -> StepResult | None:
    """The refusal of code that must not run (a failed StepResult), or None when it may run."""
    if not isinstance(code, str):
        return refusal("The code must be a string.")
    if len(code) > max_chars:
        return refusal(f"The code is {len(code)} characters long; at most {max_chars} are allowed per step.")
    if "\x00" in code:
        return refusal("The code contains a null byte, which is not allowed.")
    try:
        tree = ast.parse(code, filename="<step>")
    except SyntaxError as exc:
        return syntax_failure(exc)
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") cannot be encoded for the parser
        return refusal(f"The code contains a character that cannot be encoded as UTF-8 ({exc.object[exc.start]!a} "
                       f"at position {exc.start}); remove it.")
    # CPython 3.11 can raise SystemError ("AST constructor recursion depth mismatch") instead of RecursionError on
    # deeply nested code (seen on 200 nested lambdas parsed in a worker thread)
    except (RecursionError, MemoryError, SystemError):
        return refusal("The code is too deeply nested to be parsed; split it into simpler statements.")
    except ValueError as exc:
        return refusal(f"The code cannot be parsed: {exc}.")
    problems = list(_find_problems(tree))
    if not problems:
        return None
    line, sentence = min(problems, key=lambda problem: problem[0])
    return refusal(f"{sentence} (line {line}).")


def refusal(sentence: str) -> StepResult:
    return StepResult.failure(ErrorKind.REFUSED, sentence, f"{FAILED} {sentence}")


def describe_syntax_error(exc: SyntaxError) -> str:
    return f"{FAILED} Traceback:\n{source_line_report(exc.lineno, exc.text or '')}\n{type(exc).__name__}: {exc.msg}"


def syntax_failure(exc: SyntaxError) -> StepResult:
    return StepResult.failure(ErrorKind.SYNTAX, f"{type(exc).__name__}: {exc.msg}", describe_syntax_error(exc))


def source_line_report(number: int | None, source_line: str) -> str:
    """One traceback line; very long source lines are cut, since the model wrote them and can see them."""
    source_line = source_line.strip()
    if len(source_line) > MAX_SHOWN_SOURCE_CHARS:
        source_line = source_line[:MAX_SHOWN_SOURCE_CHARS] + " [...]"
    return f"  line {number}: {source_line}"


def _find_problems(tree: ast.AST):
    """(line, one-sentence reason) for every construct the sandbox refuses."""
    allowed_method_definitions = {
        id(statement) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for statement in node.body
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and statement.name in ALLOWED_DUNDER_METHODS
    }
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ALLOWED_MODULES:
                    yield line, _import_refusal(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield line, "Relative imports are not allowed"
            elif node.module not in ALLOWED_MODULES:
                yield line, _import_refusal(node.module or "")
        if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
            yield line, f"'{node.id}' is not available: {REFUSED_NAMES[node.id]}"
        if isinstance(node, ast.Attribute) and node.attr in BLOCKED_ATTRIBUTES:
            yield line, f"'.{node.attr}' is not allowed: frame and code internals are not accessible"
        if isinstance(node, ast.Attribute) and _is_sunder(node.attr):
            # enum's private API (_convert_, _member_map_, ...) reads modules by name
            yield line, f"'.{node.attr}' is not allowed: attributes like '_name_' are internals"
        if isinstance(node, ast.MatchClass):
            for attribute in node.kwd_attrs:
                if attribute in BLOCKED_ATTRIBUTES:
                    yield line, f"'{attribute}' is not allowed: frame and code internals are not accessible"
        for identifier in _identifiers(node):
            if identifier.startswith("__") and id(node) not in allowed_method_definitions:
                yield line, f"'{identifier}' is not allowed: names and attributes starting with '__' are reserved"


def _identifiers(node: ast.AST) -> list[str]:
    """The names a node introduces or looks up (not string constants, which stay allowed)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.keyword):
        return [node.arg] if node.arg else []
    if isinstance(node, ast.alias):
        return [name for name in (node.name, node.asname) if name]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return list(node.names)
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
        return [node.name] if node.name else []
    if isinstance(node, ast.MatchMapping):
        return [node.rest] if node.rest else []
    if isinstance(node, ast.MatchClass):
        return list(node.kwd_attrs)
    return []


def _is_sunder(name: str) -> bool:
    return len(name) > 2 and name[0] == name[-1] == "_" and not name.startswith("__")


def _import_refusal(module: str) -> str:
    return f"Importing '{module}' is not allowed: the available modules are {', '.join(ALLOWED_MODULES)}"
