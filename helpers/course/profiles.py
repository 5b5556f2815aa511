"""Load and check the run profiles (notebooks/profiles/NAME.yaml) that parameterise the notebooks."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from helpers import paths


class ProfileLoader(yaml.SafeLoader):
    """YAML as profiles and `--set` values are written: `2e-5` is a number, as in YAML 1.2 and Python (PyYAML
    follows YAML 1.1, where an exponent needs a dot, `2.0e-5`, and `2e-5` would reach a notebook as a string)."""


ProfileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(text: str):
    """A profile file's or a `--set` value's text as Python values (safe: data only)."""
    return yaml.load(text, Loader=ProfileLoader)


class ProfileError(ValueError):
    """A profile is unknown or its file is unusable; the message is one sentence saying what to do."""


def display_path(path: Path) -> str:
    """A path as the reader should see it: relative to the repository when it lives inside it."""
    try:
        return str(path.relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(path)


def available_profiles() -> list[str]:
    """Names of the profiles that exist, sorted."""
    # Read paths.PROFILES_DIR at call time so tests can point it at a temporary folder.
    folder = Path(paths.PROFILES_DIR)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())


def load_profile(name: str) -> dict:
    """The parameters of profile `name`, checked, with `profile: name` added."""
    folder = Path(paths.PROFILES_DIR)
    names = available_profiles()
    if name not in names:
        where = display_path(folder) + "/"
        if names:
            raise ProfileError(f"Unknown profile '{name}': choose one of {', '.join(names)} (files in {where}).")
        raise ProfileError(f"Unknown profile '{name}': there are no profiles yet, add {name}.yaml to {where}.")

    path = folder / f"{name}.yaml"
    shown = display_path(path)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # PyYAML's own message spans several lines; keep the problem and its position only.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(f"Profile file {shown} is not valid YAML{where} ({problem}): fix the syntax.") from None

    if not isinstance(data, dict):
        kind = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ProfileError(
            f"Profile file {shown} must contain a mapping of parameter names to values, not {kind}."
        )
    # papermill turns every key into a Python variable in the notebook, so keys must be identifiers.
    bad = [str(k) for k in data if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise ProfileError(
            f"Profile file {shown} has keys that are not valid Python names ({', '.join(bad)}): rename them."
        )
    seed = data.get("seed")
    # bool is a subclass of int, but `seed: true` is certainly a mistake.
    if not isinstance(seed, int) or isinstance(seed, bool):
        got = "nothing" if "seed" not in data else repr(seed)
        raise ProfileError(f"Profile file {shown} must set seed to an integer (got {got}).")

    data["profile"] = name
    return data
