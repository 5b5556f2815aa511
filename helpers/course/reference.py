"""A finished run, copied into one folder a reader can open on GitHub: `python -m helpers.course.reference`.

`results/<profile>/` is ignored by git: it holds models of hundreds of megabytes. This command copies what a
reader needs to see the run without rerunning it into `results/reference/<profile>/`, which git keeps: the
executed notebooks with their outputs and plots, the result tables (CSV), plots (PNG), reports and metadata, the
evaluation journals (every episode's trajectory) and the run record, with a README naming the commit the run was
made at and the command that made it. Models and training checkpoints stay out. Long text outputs of the
notebooks are cut to their beginning and end; if the folder would still exceed `MAX_BYTES` the command stops,
writing nothing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from helpers import paths
from helpers.course.pipeline import DEFAULT_PROFILE
from helpers.course.profiles import display_path
from helpers.course.run_records import RECORD

MAX_BYTES = 10 * 1000 * 1000  # small enough to browse on GitHub and to keep in the repository's history
TEXT_OUTPUT_CHARS = 20_000  # a notebook's text output longer than this keeps its first and last parts
KEPT_SUFFIXES = {".csv", ".json", ".png", ".md", ".jsonl"}
LEFT_OUT_FOLDERS = {"models", "trainer"}  # weights and checkpoints
LEFT_OUT_SUFFIXES = (".stale.jsonl", "pipeline_history.jsonl")  # superseded journals; every earlier run
WIDGET_OUTPUT = "application/vnd.jupyter.widget-view+json"  # live progress widgets: GitHub shows nothing


class ReferenceError(Exception):
    """The reference folder cannot be made; the message is one sentence saying what to do."""


def reference_dir(profile: str) -> Path:
    return Path(paths.RESULTS_DIR) / "reference" / profile


def finished_run(source: Path) -> dict:
    """The run record of `source`, which must be a whole run that ended well and ran the profile as written."""
    record_path = source / RECORD
    if not record_path.exists():
        raise ReferenceError(f"{display_path(source)} holds no run record ({RECORD}): run the profile first, "
                             f"e.g. `make publish`.")
    run = json.loads(record_path.read_text())
    failed = [n["notebook"] for n in run["notebooks"] if n["status"] != "ok"]
    if run["status"] != "ok" or failed:
        raise ReferenceError(f"The last run in {display_path(source)} ended '{run['status']}'"
                             f"{' in ' + ', '.join(failed) if failed else ''}: a reference needs a run that "
                             "finished; run the profile again.")
    whole = [p.stem for p in sorted(Path(paths.NOTEBOOKS_DIR).glob("[0-9][0-9]_*.ipynb"))]
    if [n["notebook"] for n in run["notebooks"]] != whole or run.get("overrides"):
        raise ReferenceError(f"The last run in {display_path(source)} ran part of the course or changed profile "
                             "values (--only, --from, --set): a reference needs a whole run of the profile as written.")
    return run


def _cut(text: str) -> str:
    if len(text) <= TEXT_OUTPUT_CHARS:
        return text
    head, tail = text[:TEXT_OUTPUT_CHARS * 3 // 4], text[-TEXT_OUTPUT_CHARS // 4:]
    return f"{head}\n[... {len(text) - len(head) - len(tail):,} characters cut from this output ...]\n{tail}"


def _join(text) -> str:
    return "".join(text) if isinstance(text, list) else text


def browsable_notebook(source: Path, target: Path) -> None:
    """An executed notebook with its outputs and plots, long text outputs cut, live widgets left out."""
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _cut(_join(output["text"]))
            data = output.get("data", {})
            data.pop(WIDGET_OUTPUT, None)
            if "text/plain" in data:
                data["text/plain"] = _cut(_join(data["text/plain"]))
    nbformat.write(notebook, target)


def _kept(path: Path, source: Path) -> bool:
    relative = path.relative_to(source)
    if set(relative.parts[:-1]) & LEFT_OUT_FOLDERS or relative.parts[0] == "notebooks":  # notebooks: copied apart
        return False
    return path.suffix in KEPT_SUFFIXES and not path.name.endswith(LEFT_OUT_SUFFIXES)


def _readme(run: dict, profile: str, files: int, size: int) -> str:
    command = f"python -m helpers --profile {profile}" + (" --publish" if run.get("published") else "")
    commit = str(run.get("git_commit", "unknown"))
    dirty = " (the working tree had uncommitted changes)" if commit.endswith("-dirty") else ""
    minutes = "\n".join(f"| [`{n['notebook']}`](notebooks/{n['notebook']}.ipynb) | {n['seconds'] / 60:.1f} |"
                        for n in run["notebooks"])
    return f"""# Reference run: `{profile}`

A whole run of the `{profile}` profile, kept so that its results can be read without running anything.

- made by `{command}` at commit `{commit.removesuffix('-dirty')}`{dirty}, finished {run['finished_at']}, in
  {run['seconds'] / 60:.1f} minutes (Python {run.get('python', '?')});
- copied here by `python -m helpers.course.reference --profile {profile}`: {files} files, {size / 1e6:.1f} MB.

| notebook (executed, with outputs) | minutes |
|---|---|
{minutes}

Beside the notebooks: every folder of `results/{profile}/` with its result tables (CSV), plots (PNG), reports
(`evaluation/failure_analysis.md`, `evaluation/custom/report.md`), metadata (JSON), the evaluation journals
(`evaluation/*_episodes.jsonl`: every episode's trajectory and checks) and the run record (`{RECORD}`). Left out:
the models and training checkpoints (`models/`, `*/trainer/`, hundreds of megabytes: rerun the profile to get
them). Text outputs of the notebooks longer than {TEXT_OUTPUT_CHARS:,} characters keep their beginning and end.
"""


def make_reference(profile: str, source: Path | None = None, target: Path | None = None,
                   max_bytes: int = MAX_BYTES) -> Path:
    """Copy the finished run in `source` (results/<profile>/) into `target` (results/reference/<profile>/),
    replacing what was there; raises ReferenceError, writing nothing, if the copy would exceed `max_bytes`."""
    source = Path(source) if source is not None else Path(paths.RESULTS_DIR) / profile
    target = Path(target) if target is not None else reference_dir(profile)
    run = finished_run(source)
    with tempfile.TemporaryDirectory(prefix="reference-") as scratch:
        staged = Path(scratch) / profile
        (staged / "notebooks").mkdir(parents=True)
        for record in run["notebooks"]:
            name = f"{record['notebook']}.ipynb"
            browsable_notebook(source / "notebooks" / name, staged / "notebooks" / name)
        for path in sorted(source.rglob("*")):
            if path.is_file() and _kept(path, source):
                copy = staged / path.relative_to(source)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)
        files = [p for p in staged.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        (staged / "README.md").write_text(_readme(run, profile, len(files) + 1, size))
        size += (staged / "README.md").stat().st_size
        if size > max_bytes:
            biggest = max(files, key=lambda p: p.stat().st_size)
            raise ReferenceError(
                f"The reference of {profile} would hold {size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB a "
                f"reader can browse (the biggest file is {biggest.relative_to(staged)}, "
                f"{biggest.stat().st_size / 1e6:.1f} MB): leave more out in helpers/course/reference.py.")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"the profile whose last run to copy "
                                                                   f"(default {DEFAULT_PROFILE})")
    args = parser.parse_args(argv)
    try:
        target = make_reference(args.profile)
    except ReferenceError as exc:
        print(exc, file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"Reference run of {args.profile} in {display_path(target)}/ ({size / 1e6:.1f} MB): commit it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
