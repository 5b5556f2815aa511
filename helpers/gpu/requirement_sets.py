"""Write requirements-gpu.txt and requirements-colab.txt from requirements.txt and requirements-gpu.in:
`python -m helpers.gpu.requirement_sets`.

The CPU core pins stay in requirements.txt only. pip cannot relax a pin, so a set that must differ from the core
cannot be `-r requirements.txt` plus extras: requirements-gpu.in names what the GPU sets change and add, with the
reason, and this module writes each complete set, so a core pin changed in requirements.txt reaches them by
rerunning it (tests/test_requirements.py fails until then).

- requirements-gpu.txt: one CUDA GPU; the core pins (torch from the package index is a CUDA build) plus the GPU
  additions. requirements-multigpu.txt adds DeepSpeed to it.
- requirements-colab.txt: the same without the packages Colab keeps (its torch, built for its driver, and its kernel
  packages: `helpers.course.colab.COLAB_KEEPS`), which the Colab cell holds in place while installing.
- requirements-vllm.txt (written by hand): vLLM in an environment of its own; its comment says why.
"""
from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.course.colab import COLAB_KEEPS
from helpers.paths import REPO_ROOT

CORE, CHANGES, GPU, COLAB, MULTIGPU, VLLM = (REPO_ROOT / name for name in (
    "requirements.txt", "requirements-gpu.in", "requirements-gpu.txt", "requirements-colab.txt",
    "requirements-multigpu.txt", "requirements-vllm.txt"))
PYTHONS = ("3.11", "3.12", "3.13")  # every set resolves, with wheels only, for each (Colab runs 3.13)
NOT_ON_COLAB = ("pytest",)  # the test suite does not run on Colab
GENERATED = "# Written by `python -m helpers.gpu.requirement_sets` from requirements.txt and requirements-gpu.in: edit those, then rerun it.\n"
GPU_HEADER = GENERATED + "# The GPU set, complete on its own: pip install -r requirements-gpu.txt\n"
COLAB_HEADER = GENERATED + (
    "# The Colab set: the GPU set without Colab's own torch and kernel packages (helpers.course.colab.COLAB_KEEPS),\n"
    "# which the notebooks' set-up cell keeps installed as they are: it installs this file with a constraints file\n"
    "# of their installed versions.\n")


def pins(path: Path) -> list[tuple[str, str]]:
    """(requirement, comment) per line that pins a package, in file order."""
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text, _, comment = line.partition("#")
        if not text.strip() or text.strip().startswith("-"):  # blank, or an option such as -r FILE
            continue
        requirement = Requirement(text.strip())
        if [spec.operator for spec in requirement.specifier] != ["=="]:
            raise ValueError(f"{path.name} line {number}: pin {requirement.name} with ==, as every set here does.")
        lines.append((text.strip(), comment.strip()))
    return lines


def _name(text: str) -> str:
    return canonicalize_name(Requirement(text).name)


def _with_changes(header: str, core: Path, changes: Path, leave_out: frozenset[str] = frozenset()) -> str:
    wanted = {_name(text): (text, comment) for text, comment in pins(changes)}
    out = [header]
    for text, _ in pins(core):
        name = _name(text)
        if name in wanted:
            changed, comment = wanted.pop(name)
            if name not in leave_out:
                out.append(f"{changed}  # {text} in requirements.txt: {comment}\n")
        elif name not in leave_out:
            out.append(text + "\n")
    out.append("# GPU only\n")
    out.extend(f"{text}  # {comment}\n" if comment else text + "\n" for text, comment in wanted.values())
    return "".join(out)


def gpu_set(core: Path = CORE, changes: Path = CHANGES) -> str:
    """The text of requirements-gpu.txt."""
    return _with_changes(GPU_HEADER, core, changes)


def colab_set(core: Path = CORE, changes: Path = CHANGES) -> str:
    """The text of requirements-colab.txt."""
    left_out = frozenset(canonicalize_name(name) for name in (*COLAB_KEEPS, *NOT_ON_COLAB))
    return _with_changes(COLAB_HEADER, core, changes, left_out)


def main() -> int:
    GPU.write_text(gpu_set(), encoding="utf-8")
    COLAB.write_text(colab_set(), encoding="utf-8")
    print(f"wrote {GPU.name} and {COLAB.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
