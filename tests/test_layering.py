"""The import order of helpers/, read from the source with `ast` (nothing is imported).

From the ground up, each part of helpers/ imports only parts at its own level or below it:

    top-level modules (paths, metadata, progress, devices)
    < world < sandbox < tasks < course < harness < agent < training < data < evaluation < rl < gpu < benchmarks

(`helpers/__main__.py`, the command line, sits above them all.) Imports inside functions count as well; only
those under `if TYPE_CHECKING:` do not, since they never run.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
TOP = "<top-level modules>"
ENTRY = "__main__"
ORDER = (TOP, "world", "sandbox", "tasks", "course", "harness", "agent", "training", "data", "evaluation", "rl",
         "gpu", "benchmarks", ENTRY)
GROUND = ("world", "sandbox", "tasks")
ML_LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm")
MAX_TOP_LEVEL_MODULES = 5


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name of the importing module
    target: str  # dotted name of the imported module (or package)
    line: int
    in_function: bool
    type_checking: bool

    def __str__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.importer} imports {self.target} {where} (line {self.line})"


def module_name(path: Path) -> str:
    parts = path.relative_to(HELPERS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(HELPERS.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_of(name: str, path: Path) -> list[Import]:
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit_one(statement, in_function, True)
                for statement in child.orelse:
                    visit_one(statement, in_function, type_checking)
                continue
            visit_one(child, in_function, type_checking)

    def visit_one(child: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                found.append(Import(name, alias.name, child.lineno, in_function, type_checking))
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (child.level - 1)]
                source = ".".join(base + ([child.module] if child.module else []))
            else:
                source = child.module
            for alias in child.names:
                # `from helpers import paths` imports the module helpers.paths; `from helpers.x import f`, helpers.x
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules() else source
                found.append(Import(name, target, child.lineno, in_function, type_checking))
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(child, inner, type_checking)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(found for name, path in modules().items() for found in _imports_of(name, path))


def part_of(module: str) -> str | None:
    """The part of helpers/ a module belongs to: a package's name, TOP, ENTRY, or None outside helpers."""
    parts = module.split(".")
    if parts[0] != "helpers":
        return None
    if len(parts) == 1:
        return TOP
    if parts[1] == ENTRY:
        return ENTRY
    return parts[1] if (HELPERS / parts[1]).is_dir() else TOP


def runtime_imports_between_parts() -> list[Import]:
    return [found for found in all_imports()
            if not found.type_checking and part_of(found.target) not in (None, part_of(found.importer))]


def test_the_parser_sees_the_imports():
    # guards the tests below against passing on an empty graph
    assert {"helpers.paths", "helpers.course.pipeline", "helpers.harness.episode"} <= set(modules())
    edges = {(part_of(found.importer), part_of(found.target)) for found in runtime_imports_between_parts()}
    assert {("harness", "sandbox"), ("tasks", "world"), ("evaluation", "data"), (ENTRY, "course")} <= edges
    assert any(found.in_function for found in all_imports())
    assert any(found.type_checking for found in all_imports())


def test_every_part_has_its_place_in_the_order():
    parts = {part_of(name) for name in modules()}
    assert parts <= set(ORDER), f"place these packages in ORDER: {sorted(parts - set(ORDER))}"


def test_the_ground_imports_nothing_built_on_it():
    above = set(ORDER[ORDER.index(GROUND[-1]) + 1:])
    wrong = [str(found) for found in all_imports()
             if part_of(found.importer) in GROUND and part_of(found.target) in above]
    assert not wrong, "world, sandbox and tasks must not import the parts built on them:\n" + "\n".join(wrong)


@pytest.mark.parametrize("part", ORDER[:-1])
def test_no_part_imports_one_above_it(part):
    rank = ORDER.index(part)
    wrong = [f"{found} ({part_of(found.target)} is above {part})" for found in runtime_imports_between_parts()
             if part_of(found.importer) == part and ORDER.index(part_of(found.target)) > rank]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_parts():
    graph: dict[str, set[str]] = {}
    for found in runtime_imports_between_parts():
        graph.setdefault(part_of(found.importer), set()).add(part_of(found.target))
    trail: list[str] = []
    done: set[str] = set()

    def cycle_from(node: str) -> list[str] | None:
        trail.append(node)
        for after in sorted(graph.get(node, ())):
            if after in trail:
                return trail[trail.index(after):] + [after]
            if after not in done and (cycle := cycle_from(after)):
                return cycle
        trail.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = cycle_from(start)
            assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


def _with_packages(module: str) -> list[str]:
    """A module and the packages whose __init__ importing it runs: helpers.a.b -> helpers, helpers.a, helpers.a.b."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def test_course_imports_no_ml_code_at_import_time():
    """The pipeline runs notebooks; importing it must not load torch & co. (followed through helpers' own modules)."""
    course = ["helpers"] + [name for name in modules() if part_of(name) == "course"]  # with both packages' __init__
    banned_parts = {"training", "agent", "harness", "evaluation", "gpu", "data"}
    wrong = []
    seen, todo = set(course), list(course)
    while todo:
        name = todo.pop()
        for found in _imports_of(name, modules()[name]):
            if found.in_function or found.type_checking:
                continue
            if found.target.split(".")[0] in ML_LIBRARIES or part_of(found.target) in banned_parts:
                wrong.append(str(found))
            else:
                for package in _with_packages(found.target):
                    if package in modules() and package not in seen:
                        seen.add(package)
                        todo.append(package)
    assert not wrong, "importing helpers.course would load:\n" + "\n".join(wrong)


def test_the_top_level_stays_small():
    top = sorted(path.name for path in HELPERS.glob("*.py") if path.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"helpers/ holds {len(top)} modules at its top: {top}; " \
                                              "put new ones in the package of their role"
