"""Write requirements-gpu.txt from requirements.txt and requirements-gpu.in: `python -m helpers.gpu.requirement_sets`.

The CPU core pins stay in requirements.txt only. Some GPU packages declare ranges that exclude a core pin
(vLLM's dependencies need an older numpy), so the GPU set cannot be `-r requirements.txt` plus extras: pip
cannot relax a pin. requirements-gpu.in names what the GPU set changes and adds, with the reason, and this
module writes the complete GPU set from the two, so a core pin changed in requirements.txt reaches the GPU
set by rerunning it (tests/test_requirements.py fails until then).
"""
from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.paths import REPO_ROOT

CORE, CHANGES, GPU = (REPO_ROOT / name for name in ("requirements.txt", "requirements-gpu.in", "requirements-gpu.txt"))
HEADER = ("# Written by `python -m helpers.gpu.requirement_sets` from requirements.txt and requirements-gpu.in: edit "
          "those, then rerun it.\n# The GPU set, complete on its own: pip install -r requirements-gpu.txt\n")


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


def gpu_set(core: Path = CORE, changes: Path = CHANGES) -> str:
    """The text of requirements-gpu.txt."""
    wanted = {canonicalize_name(Requirement(text).name): (text, comment) for text, comment in pins(changes)}
    out = [HEADER]
    for text, _ in pins(core):
        name = canonicalize_name(Requirement(text).name)
        if name in wanted:
            changed, comment = wanted.pop(name)
            out.append(f"{changed}  # {text} in requirements.txt: {comment}\n")
        else:
            out.append(text + "\n")
    out.append("# GPU only\n")
    out.extend(f"{text}  # {comment}\n" if comment else text + "\n" for text, comment in wanted.values())
    return "".join(out)


def main() -> int:
    GPU.write_text(gpu_set(), encoding="utf-8")
    print(f"wrote {GPU.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
