"""The first code cell of every notebook, which sets up Google Colab: `python -m helpers.course.colab` writes it,
and the "Open in Colab" badges (into docs/gpus-and-colab.md, and into README.md where it has the markers).

REPOSITORY is the one setting a fork changes: the cell clones it and the badges open notebooks from it. On Colab
the cell clones the repository and calls `set_up`, which
1. installs requirements-colab.txt once per runtime with Colab's own torch and kernel packages held where they are
   (a constraints file written from what is installed), then restarts the runtime once;
2. for a `gpu-` profile, stops with one sentence when torch sees no GPU;
3. keeps data/<profile> and results/<profile> in Google Drive (USE_DRIVE; yes by default for `gpu-` profiles):
   each badge opens its notebook in a runtime of its own, and this is how it finds what the earlier ones wrote;
4. rebuilds the cheap inputs (00 and 01: tasks and datasets) when they are missing, or says in one sentence which
   notebook to run first;
5. applies the profile to the notebook's `parameters` cell, as papermill would.
Anywhere else the cell does nothing. tests/test_colab.py checks that every notebook starts with its cell.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import nbformat

from helpers import paths

# Where the repository is published: the cell clones it and the badges open notebooks from it. A fork writes
# its own address here and reruns `python -m helpers.course.colab`.
REPOSITORY = "https://github.com/OWNER/app-agents-from-scratch"
PLACEHOLDER_OWNER = "OWNER"
COLAB_TAG = "colab-setup"
DEFAULT_PROFILE = "gpu-t4"
GUIDE = paths.REPO_ROOT / "docs" / "gpus-and-colab.md"  # the GPU and Colab page: badges, memory table
COLAB_REQUIREMENTS = "requirements-colab.txt"
INSTALLED_MARKER = ".colab-installed"
DRIVE_ROOT = Path("/content/drive/MyDrive")
# Colab's own builds and kernel packages: replacing them can leave the runtime crashing in a loop, and its torch
# is built for its driver. requirements-colab.txt leaves them out, and the install holds them where they are.
COLAB_KEEPS = ("torch", "torchvision", "torchaudio", "numpy", "pandas", "matplotlib", "ipykernel", "ipython",
               "ipywidgets", "jupyter-client", "jupyter-core", "jupyter-server", "notebook", "tornado", "traitlets")
# What each notebook reads that an earlier one writes: (folder under data/ or results/<profile>, the notebook).
CHEAP_INPUTS = ("00", "01")  # minutes on a CPU: rebuilt when missing
TRAINED_MODELS = {"04": ("02_sft_full", ("sft_full", "lora_merged")),
                  "06": ("02_sft_full", ("sft_full", "lora_merged", "grpo"))}


class ColabSetupError(SystemExit):
    """The Colab set-up cannot go on; the message says what to do in one sentence (SystemExit: no traceback)."""


def clone_root() -> str:
    return "/content/" + REPOSITORY.rstrip("/").rsplit("/", 1)[-1]


def cell_for(notebook: str) -> str:
    """The set-up cell of one notebook (its stem, e.g. `02_sft_full`)."""
    placeholder = ""
    if f"/{PLACEHOLDER_OWNER}/" in REPOSITORY:
        placeholder = (f'    raise SystemExit("The set-up cell names the placeholder repository {REPOSITORY}: set '
                       f'REPOSITORY in helpers/course/colab.py to your repository\'s address and run '
                       f'`python -m helpers.course.colab`.")\n')
    return f'''\
# Google Colab set-up; does nothing elsewhere. Written by `python -m helpers.course.colab`: edit it there.
PROFILE = "{DEFAULT_PROFILE}"   # the profile whose values this notebook runs with on Colab
USE_DRIVE = None     # data/ and results/ of the profile in Google Drive; None: yes for gpu- profiles
import os, subprocess, sys
if "google.colab" in sys.modules:
{placeholder}    root = "{clone_root()}"
    if not os.path.isdir(root):
        subprocess.run(["git", "clone", "--depth", "1", "{REPOSITORY}", root], check=True)
    os.chdir(os.path.join(root, "notebooks"))
    sys.path.insert(0, os.getcwd())
    from helpers.course.colab import set_up
    set_up(PROFILE, "{notebook}", USE_DRIVE)
'''


def set_up(profile: str, notebook: str, use_drive: bool | None = None) -> None:
    """Everything the cell does on Colab after cloning (module docstring, steps 1-5)."""
    from helpers.devices import requires_gpu

    install_once()
    if requires_gpu(profile):
        require_gpu(profile)
    if requires_gpu(profile) if use_drive is None else use_drive:
        from google.colab import drive

        drive.mount(str(DRIVE_ROOT.parent))
        keep_on_drive(profile)
    prepare_inputs(profile, notebook)
    use_profile(profile)


def install_once() -> None:
    """pip install requirements-colab.txt, Colab's kept packages held by constraints; then restart the runtime."""
    marker = paths.REPO_ROOT / INSTALLED_MARKER
    if marker.exists():
        return
    constraints = Path(tempfile.gettempdir()) / "colab-constraints.txt"
    constraints.write_text(colab_constraints(), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", COLAB_REQUIREMENTS, "-c",
                          str(constraints)], cwd=paths.REPO_ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ColabSetupError(f"pip could not install {COLAB_REQUIREMENTS} beside Colab's own torch and kernel "
                              f"packages ({last}): open an issue with this line, or run a cpu- profile.")
    marker.write_text(colab_constraints(), encoding="utf-8")
    print("Installed; the runtime restarts once to load the new packages: run this notebook again.", flush=True)
    os.kill(os.getpid(), 9)


def colab_constraints() -> str:
    """`name==version` for each of COLAB_KEEPS that is installed here (local labels kept: 2.11.0+cu128)."""
    lines = []
    for name in COLAB_KEEPS:
        try:
            lines.append(f"{name}=={metadata.version(name)}\n")
        except metadata.PackageNotFoundError:
            continue
    return "".join(lines)


def require_gpu(profile: str) -> None:
    from helpers.devices import NoGPUError, device_plan

    try:
        print(device_plan(profile=profile).describe())
    except NoGPUError as error:
        raise ColabSetupError(str(error)) from None


def keep_on_drive(profile: str, drive_root: Path = DRIVE_ROOT) -> list[Path]:
    """Make data/<profile> and results/<profile> links to folders in Google Drive; what was there already is kept
    beside them as `<profile>-before-drive`. Returns the Drive folders."""
    folders = []
    for local in (paths.DATA_DIR / profile, paths.RESULTS_DIR / profile):
        target = drive_root / paths.REPO_ROOT.name / local.parent.name / profile
        target.mkdir(parents=True, exist_ok=True)
        if local.is_symlink():
            local.unlink()
        elif local.exists():
            local.rename(local.with_name(f"{profile}-before-drive"))
        local.parent.mkdir(parents=True, exist_ok=True)
        local.symlink_to(target, target_is_directory=True)
        folders.append(target)
    return folders


def missing_inputs(profile: str, notebook: str) -> tuple[bool, str | None]:
    """(whether 00 and 01 must run first, the sentence to stop with when a trained model is missing)."""
    number = notebook[:2]
    data = paths.DATA_DIR / profile
    rebuild = number not in CHEAP_INPUTS and not (
        (data / "tasks" / "test_normal.jsonl").exists() and (data / "datasets" / "stepwise_train.jsonl").exists())
    stop = None
    if number in TRAINED_MODELS:
        first, folders = TRAINED_MODELS[number]
        models = paths.RESULTS_DIR / profile / "models"
        if not any((models / folder / "config.json").exists() for folder in folders):
            stop = (f"{notebook} needs a model that an earlier notebook trains and results/{profile}/models has "
                    f"none: run {first} first (with the same PROFILE and USE_DRIVE, so this runtime finds it).")
    return rebuild, stop


def prepare_inputs(profile: str, notebook: str) -> None:
    rebuild, stop = missing_inputs(profile, notebook)
    if rebuild:
        print(f"data/{profile} has no task suite or datasets yet: building them with 00 and 01 (a few minutes).",
              flush=True)
        subprocess.run([sys.executable, "-m", "helpers", "--profile", profile, "--only", *CHEAP_INPUTS],
                       cwd=paths.REPO_ROOT, check=True)
    if stop:
        raise ColabSetupError(stop)


def use_profile(profile: str) -> None:
    """After the notebook's `parameters` cell runs, replace its values with the profile's (as papermill would
    inject them)."""
    from IPython import get_ipython

    from helpers.course.profiles import load_profile

    values = load_profile(profile)
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


def first_code_cell(notebook) -> nbformat.NotebookNode | None:
    return next((cell for cell in notebook.cells if cell.cell_type == "code"), None)


def notebooks() -> list[Path]:
    return sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def write_cells() -> list[str]:
    """Put each notebook's cell first in it (replacing an older version of it); returns the notebooks changed."""
    changed = []
    for path in notebooks():
        notebook = nbformat.read(path, as_version=4)
        cell_text = cell_for(path.stem)
        first = first_code_cell(notebook)
        if first is not None and COLAB_TAG in first.metadata.get("tags", []):
            if first.source == cell_text:
                continue
            first.source = cell_text
        else:
            cell = nbformat.v4.new_code_cell(cell_text, metadata={"tags": [COLAB_TAG]})
            position = notebook.cells.index(first) if first is not None else len(notebook.cells)
            notebook.cells.insert(position, cell)
        nbformat.write(notebook, path)
        changed.append(path.name)
    return changed


def badges() -> str:
    """A Markdown table with an "Open in Colab" badge per notebook."""
    base = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/")
    rows = ["| notebook | Colab |", "|---|---|"]
    for path in notebooks():
        rows.append(f"| `{path.stem}` | [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                    f"({base}/blob/main/notebooks/{path.name}) |")
    return "\n".join(rows)


def badge_pages() -> list[Path]:
    """The pages that show the badges: the GPU guide always, the README while it has the markers."""
    return [GUIDE, paths.REPO_ROOT / "README.md"]


def main() -> int:
    from helpers.course.profiles import display_path
    from helpers.course.report import update_readme_section

    changed = write_cells()
    print(f"Colab cell written into {', '.join(changed)}" if changed else "every notebook already starts with it")
    written = [display_path(page) for page in badge_pages()
               if page.exists() and update_readme_section("colab-badges", badges(), page)]
    print(f"badges written into {', '.join(written)}" if written else "no page has colab-badges markers",
          file=sys.stdout if written else sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
