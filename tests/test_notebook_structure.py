"""Every notebook keeps the shape of a lesson, whatever its words: it opens with what you will learn, what it
needs and its time, explains before it computes, closes with takeaways and exercises whose solutions are in
docs/exercises.md, is committed without outputs, and its parameter defaults write no file of the repository."""
from __future__ import annotations

import ast
import re

import nbformat
import pytest

from helpers.course.notebook_defaults import parameters_cell
from helpers.course.pipeline import PUBLISH_PARAMETER, discover_notebooks

# each as a heading or as a bold lead-in (`**Time** ...`); "you need" also matches "What you need"
OPENING = ("what you will learn", "you need", "time")
LEVELS = ("🐢", "🐕", "🦁", "*(easy)*", "*(medium)*", "*(hard)*")
MAX_CODE_CELLS_IN_A_ROW = 3
SOLUTIONS = re.compile(r"\]\(\.\./docs/exercises\.md#[\w-]+\)")

NOTEBOOKS = discover_notebooks()


def _headings(markdown: str) -> list[str]:
    return [h.strip().lower() for h in re.findall(r"^#{1,6}\s+(.+)$", markdown, re.M)]


def _leads(markdown: str) -> list[str]:
    """Headings and the bold words that open a paragraph, in lower case."""
    return _headings(markdown) + [b.strip().lower() for b in re.findall(r"^\*\*([^*]+)\*\*", markdown, re.M)]


def _list_items(markdown: str, numbered: bool) -> list[str]:
    pattern = r"^\d+\.\s+(.+)$" if numbered else r"^[-*]\s+(.+)$"
    return re.findall(pattern, markdown, re.M)


def opening_problems(notebook) -> list[str]:
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    opening = "\n\n".join(c.source for c in notebook.cells[:first_code] if c.cell_type == "markdown")
    problems = [] if re.match(r"# \d\d · ", opening) else ["no '# NN · title' first"]
    leads = _leads(opening)
    problems += [f"no heading '{name}' before the first code cell" for name in OPENING
                 if not any(lead == name or lead.endswith(" " + name) for lead in leads)]
    learn = opening.lower().split("what you will learn", 1)[-1]
    if len(_list_items(learn.split("#", 1)[0], numbered=False)) < 2:
        problems.append("'what you will learn' lists fewer than two things")
    return problems


def closing_problems(notebook) -> list[str]:
    *_, takeaways, exercises = notebook.cells
    problems = []
    if takeaways.cell_type != "markdown" or _headings(takeaways.source)[:1] != ["takeaways"]:
        problems.append("the next to last cell is not '## Takeaways'")
    elif len(_list_items(takeaways.source, numbered=False)) < 2:
        problems.append("the takeaways list fewer than two")
    if exercises.cell_type != "markdown" or _headings(exercises.source)[:1] != ["exercises"]:
        return problems + ["the last cell is not '## Exercises'"]
    items = _list_items(exercises.source, numbered=True)
    if not 2 <= len(items) <= 3:
        problems.append(f"{len(items)} exercises instead of 2 or 3")
    problems += [f"exercise {n} has no level ({' '.join(LEVELS)})" for n, item in enumerate(items, 1)
                 if not item.startswith(LEVELS)]
    if not SOLUTIONS.search(exercises.source):
        problems.append("the exercises do not link their solutions in ../docs/exercises.md#...")
    return problems


def code_runs(notebook) -> list[int]:
    """The lengths of the runs of code cells with no markdown between them."""
    runs, current = [], 0
    for cell in notebook.cells:
        current = current + 1 if cell.cell_type == "code" else 0
        runs.append(current)
    return runs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_opens_with_its_goals_and_closes_with_takeaways_and_exercises(path):
    notebook = nbformat.read(path, as_version=4)
    assert not opening_problems(notebook) and not closing_problems(notebook), \
        f"{path.name}: {opening_problems(notebook) + closing_problems(notebook)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_explains_before_it_computes(path):
    longest = max(code_runs(nbformat.read(path, as_version=4)))
    assert longest <= MAX_CODE_CELLS_IN_A_ROW, f"{path.name} has {longest} code cells in a row with no text between"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; clear them before committing"


def test_the_parameter_defaults_never_publish():
    """The one switch that lets a notebook write tracked files is off in every notebook that has it; the smoke run
    in test_notebooks_smoke.py checks the same from the outside (an unpublished run changes no file)."""
    declaring = {}
    for path in NOTEBOOKS:
        for node in ast.parse(parameters_cell(nbformat.read(path, as_version=4)).source).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == PUBLISH_PARAMETER for t in node.targets):
                declaring[path.stem] = ast.literal_eval(node.value)
    assert "06_finetuned_inference" in declaring
    assert all(value is False for value in declaring.values()), declaring


def test_the_checks_find_a_notebook_that_lost_its_shape():
    lesson = nbformat.v4.new_notebook()
    lesson.cells = [nbformat.v4.new_markdown_cell("# 09 · Something\n\n### Time\nA minute."),
                    *[nbformat.v4.new_code_cell("x = 1") for _ in range(4)],
                    nbformat.v4.new_markdown_cell("## Exercises\n\n1. 🐢 One.\n2. Two.")]
    assert opening_problems(lesson) == ["no heading 'what you will learn' before the first code cell",
                                        "no heading 'you need' before the first code cell",
                                        "'what you will learn' lists fewer than two things"]
    assert closing_problems(lesson) == ["the next to last cell is not '## Takeaways'", "exercise 2 has no level "
                                        f"({' '.join(LEVELS)})", "the exercises do not link their solutions in "
                                        "../docs/exercises.md#..."]
    assert max(code_runs(lesson)) == 4
    bold = nbformat.v4.new_notebook()
    bold.cells = [nbformat.v4.new_markdown_cell("# 09 · Something\n\n**What you will learn**\n- one\n- two\n\n"
                                                "**You need** nothing.\n\n**Time** a minute."),
                  nbformat.v4.new_code_cell("x = 1")]
    assert opening_problems(bold) == []  # bold lead-ins are headings too
