"""The first code cell of every notebook, which sets up Google Colab: `python -m helpers.course.colab` writes it
(and the README's "Open in Colab" badges).

On Colab the cell clones the repository, installs the requirement set for the machine (requirements-gpu.txt
with a GPU, the CPU core without), optionally keeps results/ on Google Drive, and makes the notebook take
its parameters from a profile (gpu-t4 by default), as the pipeline would. Anywhere else it does nothing.
The cell is code written here once; tests/test_colab.py checks that every notebook starts with it.
"""
from __future__ import annotations

import sys

import nbformat

from helpers import paths

# Where the repository is published: the cell clones it and the README's badges open notebooks from it.
# A fork sets its own address here and reruns `python -m helpers.course.colab`.
REPOSITORY = "https://github.com/OWNER/app-agents-from-scratch"
COLAB_TAG = "colab-setup"
DEFAULT_PROFILE = "gpu-t4"

CELL = f'''\
# Google Colab set-up; does nothing elsewhere. Written by `python -m helpers.course.colab`: edit it there.
PROFILE = "{DEFAULT_PROFILE}"   # the profile whose values this notebook runs with on Colab
RESULTS_ON_DRIVE = False  # True keeps results/ in Google Drive, so models and outputs outlive the session
import os, subprocess, sys
if "google.colab" in sys.modules:
    repository = "{REPOSITORY}"
    root = "/content/" + repository.rsplit("/", 1)[-1]
    if not os.path.isdir(root):
        subprocess.run(["git", "clone", "--depth", "1", repository, root], check=True)
    gpu = subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    requirements = ["-r", "requirements-gpu.txt"] if gpu else ["-r", "requirements.txt"]
    done = os.path.join(root, ".colab-installed")
    if not os.path.exists(done):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *requirements], cwd=root, check=True)
        open(done, "w").close()
        print("Installed; the runtime restarts to load the new packages: run this notebook again.")
        os.kill(os.getpid(), 9)
    if RESULTS_ON_DRIVE:
        from google.colab import drive
        drive.mount("/content/drive")
    os.chdir(os.path.join(root, "notebooks"))
    sys.path.insert(0, os.getcwd())
    from helpers.course.colab import use_profile
    use_profile(PROFILE, results_on_drive=RESULTS_ON_DRIVE)
'''


def use_profile(profile: str, results_on_drive: bool = False) -> None:
    """After the notebook's `parameters` cell runs, replace its values with the profile's (as papermill would
    inject them), and point results/ at Google Drive when asked."""
    from IPython import get_ipython

    from helpers.course.profiles import load_profile

    values = load_profile(profile)
    if results_on_drive:
        _results_on_drive()
    shell = get_ipython()

    def inject(result) -> None:
        if _is_parameters_cell(result.info.raw_cell):
            declared = {name for name in shell.user_ns if name in values}
            shell.user_ns.update({name: values[name] for name in declared})
            print(f"profile {profile}: {', '.join(sorted(declared))}")
            shell.events.unregister("post_run_cell", inject)

    shell.events.register("post_run_cell", inject)


def _is_parameters_cell(source: str | None) -> bool:
    """The parameters cell is the one that assigns `profile = ...` at its top."""
    return bool(source) and source.lstrip().startswith("profile =")


def _results_on_drive() -> None:
    """Make results/ a link to a folder in Google Drive (mounted by the cell); what was there is kept aside."""
    import os

    target = "/content/drive/MyDrive/" + paths.REPO_ROOT.name + "-results"
    os.makedirs(target, exist_ok=True)
    if not paths.RESULTS_DIR.is_symlink():
        if paths.RESULTS_DIR.exists():
            paths.RESULTS_DIR.rename(paths.RESULTS_DIR.with_name("results-before-drive"))
        paths.RESULTS_DIR.symlink_to(target)


def first_code_cell(notebook) -> nbformat.NotebookNode | None:
    return next((cell for cell in notebook.cells if cell.cell_type == "code"), None)


def write_cells() -> list[str]:
    """Put CELL first in every notebook (replacing an older version of it); returns the notebooks changed."""
    changed = []
    for path in sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        first = first_code_cell(notebook)
        if first is not None and COLAB_TAG in first.metadata.get("tags", []):
            if first.source == CELL:
                continue
            first.source = CELL
        else:
            cell = nbformat.v4.new_code_cell(CELL, metadata={"tags": [COLAB_TAG]})
            position = notebook.cells.index(first) if first is not None else len(notebook.cells)
            notebook.cells.insert(position, cell)
        nbformat.write(notebook, path)
        changed.append(path.name)
    return changed


def badges() -> str:
    """A Markdown table with an "Open in Colab" badge per notebook, for the README."""
    base = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/")
    rows = ["| notebook | Colab |", "|---|---|"]
    for path in sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        rows.append(f"| `{path.stem}` | [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                    f"({base}/blob/main/notebooks/{path.name}) |")
    return "\n".join(rows)


def main() -> int:
    from helpers.course.report import update_readme_section

    changed = write_cells()
    print(f"Colab cell written into {', '.join(changed)}" if changed else "every notebook already starts with it")
    if not update_readme_section("colab-badges", badges()):
        print("README.md has no colab-badges markers; badges not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
