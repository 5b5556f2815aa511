"""The default values of every notebook's `parameters` cell are the default profile's, so a notebook opened
in Jupyter (no papermill, no profile) runs what `make run` runs.

`python -m helpers.course.notebook_defaults` rewrites the values in place after a profile changes (comments kept);
tests/test_notebook_defaults.py fails when they have drifted apart.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

from helpers.course.pipeline import DEFAULT_PROFILE, discover_notebooks
from helpers.course.profiles import load_profile
from helpers.paths import NOTEBOOKS_DIR

# one assignment per line: `name = value` and an optional comment, as the parameters cells are written
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_]\w*) = (?P<value>.*?)(?P<comment>\s+#.*)?$")


def parameters_cell(notebook):
    return next(c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))


def literal(value) -> str:
    """A profile value (from YAML) as the Python literal a parameters cell holds (strings in double quotes)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def with_defaults(source: str, values: dict) -> tuple[str, list[str]]:
    """A parameters cell with `values` written as its defaults (comments kept), and the names that changed."""
    lines, changed = [], []
    for line in source.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match["name"] in values and match["value"] != literal(values[match["name"]]):
            assignment = f"{match['name']} = {literal(values[match['name']])}"
            if match["comment"]:  # the comment stays in its column while the value fits before it
                column = len(line) - len(match["comment"].lstrip())
                assignment = assignment.ljust(column - 1) + " " + match["comment"].lstrip()
            line = assignment
            changed.append(match["name"])
        lines.append(line)
    return "\n".join(lines), changed


def drifted(profile: str = DEFAULT_PROFILE, notebooks: list[Path] | None = None) -> dict[str, list[str]]:
    """Per notebook, the parameters whose default differs from the profile's value."""
    values = {**load_profile(profile), "profile": profile}
    found = {}
    for path in notebooks or discover_notebooks():
        _, names = with_defaults(parameters_cell(nbformat.read(path, as_version=4)).source, values)
        if names:
            found[path.name] = names
    return found


def sync(profile: str = DEFAULT_PROFILE, notebooks: list[Path] | None = None) -> list[str]:
    """Write the profile's values as the defaults of every notebook; returns the notebooks changed."""
    values = {**load_profile(profile), "profile": profile}
    changed = []
    for path in notebooks or discover_notebooks():
        notebook = nbformat.read(path, as_version=4)
        cell = parameters_cell(notebook)
        cell.source, names = with_defaults(cell.source, values)
        if names:
            nbformat.write(notebook, path)
            changed.append(path.name)
    return changed


if __name__ == "__main__":
    changed = sync(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PROFILE)
    print(f"defaults written in {', '.join(changed)}" if changed else f"defaults of {NOTEBOOKS_DIR.name}/ already match")
