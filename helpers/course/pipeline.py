"""Run the course notebooks in order with papermill for one profile: `python -m helpers --profile NAME`."""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import nbformat
import papermill
import yaml
import zmq
from jupyter_client.kernelspec import NoSuchKernel
from jupyter_client.manager import KernelManager
from papermill.exceptions import PapermillExecutionError
from papermill.translators import PythonTranslator
from traitlets.config import Config

from helpers import paths
from helpers.course.profiles import ProfileError, display_path, load_profile, read_yaml
from helpers.course.course_map import COURSE_MAP_SECTION, course_map
from helpers.course.report import pages_with_section, timings_table, update_readme_section
from helpers.course.run_records import (
    executed_copy, now, record_killed, save_record, settle_copy, still_running, this_process, unfinished_run,
)
from helpers.metadata import git_commit
from helpers.progress import STARTUP, live_progress_options, slower_bars_in_logs

DEFAULT_PROFILE = "cpu-smollm2"
KERNEL_NAME = "python3"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
# The notebook parameter that lets a notebook write the published pages (README.md, docs/, screenshots/). Its
# default in every notebook is off, so a notebook run by hand changes no tracked file; only `--publish` sets it.
PUBLISH_PARAMETER = "publish"


class PipelineError(Exception):
    """The pipeline cannot start as asked; the message is one sentence saying what to do."""


class Terminated(KeyboardInterrupt):
    """The pipeline was asked to stop (SIGTERM, as `kill` sends): handled like Ctrl-C, recorded as terminated."""


class NotebookFailed(PipelineError):
    """A notebook raised while running; carries what is needed to find and read the failure."""

    def __init__(self, notebook: str, ename: str, evalue: str, output: Path, records: list[dict]):
        self.notebook, self.ename, self.evalue, self.output, self.records = notebook, ename, evalue, output, records
        where = (
            f"open the executed copy to see the failing cell and its traceback: {display_path(output)}"
            if output.exists()
            else "no executed copy was written"
        )
        super().__init__(f"Notebook {notebook} failed with {ename}: {evalue}\n{where[0].upper()}{where[1:]}")


def discover_notebooks() -> list[Path]:
    """The course notebooks (NN_name.ipynb), in the order they run."""
    # Read paths.NOTEBOOKS_DIR at call time so tests can point it at a temporary folder.
    folder = Path(paths.NOTEBOOKS_DIR)
    found = sorted(folder.glob(NOTEBOOK_PATTERN))
    if not found:
        raise PipelineError(
            f"No notebooks to run: {display_path(folder)}/ has no file named like {NOTEBOOK_PATTERN}."
        )
    return found


def resolve_notebook(name: str, notebooks: list[Path]) -> Path:
    """The notebook meant by `name`, given as `02`, `02_sft_full` or `02_sft_full.ipynb`."""
    key = Path(name).name.removesuffix(".ipynb")
    matches = [nb for nb in notebooks if nb.stem == key] or [nb for nb in notebooks if nb.stem[:2] == key]
    stems = [nb.stem for nb in notebooks]
    if not matches:
        raise PipelineError(
            f"Unknown notebook '{name}': choose one of {', '.join(stems)} "
            f"(the number alone, e.g. {stems[0][:2]}, is enough)."
        )
    if len(matches) > 1:
        raise PipelineError(
            f"Notebook '{name}' is ambiguous: give the full name, one of {', '.join(m.stem for m in matches)}."
        )
    return matches[0]


def select_notebooks(notebooks: list[Path], start: str | None = None, only: list[str] | None = None) -> list[Path]:
    """The notebooks to run: all of them, those from `start` on, or just `only` (kept in pipeline order)."""
    if start is not None and only:
        raise PipelineError("Give either a notebook to start from or a list of notebooks to run, not both.")
    if start is not None:
        first = resolve_notebook(start, notebooks)
        return notebooks[notebooks.index(first):]
    if only:
        # Later notebooks read what earlier ones wrote, so keep pipeline order whatever order was typed.
        chosen = {resolve_notebook(name, notebooks) for name in only}
        return [nb for nb in notebooks if nb in chosen]
    return list(notebooks)


def declared_parameters(notebook: Path) -> list[str]:
    """The names assigned in the notebook's cell tagged `parameters` (empty if it has none)."""
    nb = nbformat.read(notebook, as_version=4)
    # papermill.inspect_notebook does this same parsing but refuses notebooks without kernel metadata;
    # every notebook here runs on the python3 kernel, so use the Python translator directly.
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return [p.name for p in PythonTranslator.inspect(cell)]
    return []


def notebook_parameters(notebook: Path, profile: dict) -> dict:
    """The profile values this notebook declares in its `parameters` cell, and nothing else."""
    # Passing undeclared names would make papermill warn and leave stray variables in the notebook.
    declared = set(declared_parameters(notebook))
    return {name: value for name, value in profile.items() if name in declared}


def parse_overrides(pairs: list[str]) -> dict:
    """`NAME=VALUE` pairs from the command line; values are read as YAML, as in a profile (6, 0.002, true)."""
    overrides = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise PipelineError(f"Cannot read --set {pair!r}: write it as NAME=VALUE, for example --set sft_epochs=6.")
        try:
            overrides[name] = read_yaml(text)
        except yaml.YAMLError:
            raise PipelineError(f"Cannot read the value of --set {pair!r}: write it as in a profile file.") from None
    return overrides


def plan_run(profile: str, start: str | None, only: list[str] | None,
             overrides: dict | None = None, publish: bool = False) -> tuple[dict, list[Path]]:
    """The profile's values with `overrides` applied, and the selected notebooks; every override must be
    a parameter of one of them, so a misspelt name stops the run before anything is executed.

    `publish` asks the run to write its tables and plots into the pages (README.md, docs/, screenshots/): only
    a whole run of the profile as written may, and only a profile whose results have a page."""
    params = load_profile(profile)
    notebooks = select_notebooks(discover_notebooks(), start, only)
    overrides = overrides or {}
    if PUBLISH_PARAMETER in overrides:
        raise PipelineError(f"{PUBLISH_PARAMETER} is set by --publish, not by --set: drop --set {PUBLISH_PARAMETER}.")
    declared = {name for nb in notebooks for name in declared_parameters(nb)}
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise PipelineError(f"No selected notebook has the parameter(s) {', '.join(unknown)}: "
                            f"check the spelling against `--list`.")
    if publish and (start is not None or only or overrides):
        raise PipelineError("--publish writes the pages from a whole run of the profile as written: "
                            "drop --from, --only and --set.")
    if publish and not pages_with_section(f"results-{profile}"):
        raise PipelineError(f"Profile {profile} has no results page to publish into: add the markers "
                            f"<!-- results-{profile}:start --> and <!-- results-{profile}:end --> to a page in docs/.")
    # whatever a profile file says, only --publish lets a notebook write tracked files
    return {**params, **overrides, PUBLISH_PARAMETER: publish}, notebooks


def _kernel_python() -> str | None:
    """The interpreter jupyter_client would launch for the `python3` kernel, or None if there is no such kernel."""
    try:
        manager = KernelManager(kernel_name=KERNEL_NAME)
        # format_kernel_cmd is what launching uses; it swaps a bare `python` in the spec for sys.executable.
        return os.path.abspath(manager.format_kernel_cmd()[0])
    except NoSuchKernel:
        return None


def ensure_kernel() -> str:
    """Make papermill's `python3` kernel run this interpreter, installing a kernel spec here if it does not."""
    wanted = os.path.abspath(sys.executable)
    if _kernel_python() == wanted:
        return wanted
    # A spec found first may point at another Python (e.g. one left by an earlier install); write ours into
    # sys.prefix, which jupyter searches before the user's folders when running from a virtualenv.
    from ipykernel.kernelspec import install

    install(prefix=sys.prefix, kernel_name=KERNEL_NAME)
    found = _kernel_python()
    if found != wanted:
        spec_dir = KernelManager(kernel_name=KERNEL_NAME).kernel_spec.resource_dir
        raise PipelineError(
            f"The Jupyter kernel '{KERNEL_NAME}' starts {found} instead of {wanted}: "
            f"remove or fix the kernel spec in {spec_dir} (or unset JUPYTER_PATH) and run again."
        )
    return wanted


def _kernel_options(quiet: bool) -> dict:
    """Extra nbclient settings for the kernel: encrypted sockets when pyzmq can, as ipykernel asks; its own
    log silenced (a kernel stopped mid-cell logs a traceback of its teardown, which says nothing about the
    notebook); and, unless quiet, progress bars drawn as text (helpers.progress) so they reach the terminal."""
    arguments = ["--IPKernelApp.log_level=CRITICAL"]
    if not quiet:
        arguments.append(f"--IPKernelApp.exec_lines={STARTUP}")
    options = {"extra_arguments": arguments}
    # Without CurveZMQ keys ipykernel prints a warning on every start, in the middle of our progress lines.
    if zmq.has("curve"):
        options["config"] = Config({"KernelManager": {"transport_encryption": "auto"}})
    return options


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While the pipeline runs, SIGTERM stops it like Ctrl-C does, so the run record says how it ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_pipeline(profile: str, start: str | None = None, only: list[str] | None = None,
                 overrides: dict | None = None, quiet: bool = False, publish: bool = False) -> list[dict]:
    """Run the selected notebooks for `profile`, stopping at the first failure (raises NotebookFailed).

    `overrides` replace profile values for this run only (they are recorded in the run record); the
    outputs still go to the profile's folders. Unless `quiet`, the terminal shows each code cell as it
    starts and the kernel's output, progress bars included, as it comes. With `publish` (a whole run only)
    the results table, plots and failure analysis of `06` and the stage times go into the pages.

    Returns one record per notebook (name, status, seconds, parameters passed, executed copy) and
    writes the run record to results/<profile>/pipeline.json (and, once it ends, to pipeline_history.jsonl).
    A run stopped by Ctrl-C or SIGTERM says so; one killed outright is recorded as killed by the next run.
    """
    overrides = dict(overrides or {})
    params, notebooks = plan_run(profile, start, only, overrides, publish)
    python = ensure_kernel()

    out_root = paths.results_dir(profile)
    out_dir = out_root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = unfinished_run(out_root)
    if previous is not None:
        if still_running(previous):
            raise PipelineError(
                f"Profile {profile} is being run by another pipeline (process {previous['pid']}, started "
                f"{previous.get('started_at')}): wait for it to finish or stop it, then run again.")
        previous = record_killed(previous, out_root, out_dir)
    records = [
        {"notebook": nb.stem, "status": "not run", "seconds": None, "parameters": [], "output": None, "error": None}
        for nb in notebooks
    ]
    run = {
        "profile": profile,
        "status": "running",
        "started_at": now(),
        "finished_at": None,
        "seconds": None,
        **this_process(),
        "python": platform.python_version(),
        "python_executable": python,
        "git_commit": git_commit(),
        "parameters": params,
        "overrides": overrides,
        "published": publish,
        "notebooks": records,
    }
    if previous is not None:
        run["previous_run"] = previous  # it was killed before it could record how it ended

    t_start = time.perf_counter()

    def save(status: str) -> None:
        run["status"] = status
        if status != "running":
            run["finished_at"] = now()
            run["seconds"] = round(time.perf_counter() - t_start, 1)
        save_record(out_root, run)

    save("running")
    print(f"Profile {profile}: running {len(notebooks)} notebook(s) with {python}", flush=True)
    with _terminate_as_interrupt(), slower_bars_in_logs():
        for i, (nb, record) in enumerate(zip(notebooks, records), start=1):
            nb_params = notebook_parameters(nb, params)
            running = executed_copy(out_dir, nb.stem, "running")
            record.update(status="running", parameters=sorted(nb_params), output=display_path(running))
            save("running")
            print(f"[{i}/{len(notebooks)}] {nb.stem}", end=" ... " if quiet else " ...\n", flush=True)
            prefix = "" if quiet else f"[{i}/{len(notebooks)}] {nb.stem} "  # the end of the notebook's line
            t0 = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(nb),
                    str(running),
                    parameters=nb_params,
                    cwd=str(paths.NOTEBOOKS_DIR),
                    kernel_name=KERNEL_NAME,
                    # Stated outright so notebooks saved without kernel metadata can still be parameterised.
                    language="python",
                    progress_bar=False,  # one line per cell instead (below): a bar would fight the forwarded output
                    coalesce_streams=True,  # a bar redrawn a thousand times is stored as its last state
                    **({} if quiet else live_progress_options(nb, nb_params)),
                    **_kernel_options(quiet),
                )
            except KeyboardInterrupt as exc:
                status = "terminated" if isinstance(exc, Terminated) else "interrupted"
                output = settle_copy(out_dir, nb.stem, status)
                record.update(status=status, seconds=round(time.perf_counter() - t0, 1), output=display_path(output))
                print(f"{prefix}{status}", flush=True)
                save(status)
                raise
            except Exception as exc:  # any failure stops the run; the executed copy shows the details
                seconds = round(time.perf_counter() - t0, 1)
                if isinstance(exc, PapermillExecutionError):
                    ename, evalue = exc.ename, exc.evalue
                else:
                    ename, evalue = type(exc).__name__, str(exc)
                output = settle_copy(out_dir, nb.stem, "failed")
                record.update(status="failed", seconds=seconds, error=f"{ename}: {evalue}", output=display_path(output))
                print(f"{prefix}FAILED after {seconds:.1f} s", flush=True)
                save("failed")
                raise NotebookFailed(nb.stem, ename, evalue, output, records) from exc
            output = settle_copy(out_dir, nb.stem, "ok")
            record.update(status="ok", seconds=round(time.perf_counter() - t0, 1), output=display_path(output))
            print(f"{prefix}ok in {record['seconds']:.1f} s", flush=True)
    save("ok")
    if publish:  # a whole run of the profile as written (plan_run checked): its stage times go next to its results
        written = update_readme_section(f"timings-{profile}", timings_table(run))
        print("stage times published" if written else f"no page has timings-{profile} markers", flush=True)
        if profile == DEFAULT_PROFILE and update_readme_section(COURSE_MAP_SECTION, course_map(run)):
            print("course map minutes published", flush=True)
    print(
        f"Done: {len(notebooks)} notebook(s) in {run['seconds']:.1f} s; executed copies in "
        f"{display_path(out_dir)}/, run record in {display_path(out_root / 'pipeline.json')}.",
        flush=True,
    )
    return records


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (0 ok, 1 a notebook failed, 2 bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description="Run the course notebooks in order with papermill, parameterised by a profile.",
    )
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"profile name in notebooks/profiles/ (default {DEFAULT_PROFILE})"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--from", dest="start", metavar="NB", help="start at this notebook (02, 02_sft_full or 02_sft_full.ipynb)"
    )
    which.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
        help="replace a profile value for this run, e.g. --set sft_epochs=6 (repeatable)",
    )
    parser.add_argument("--publish", action="store_true",
                        help="a whole run only: write its results table, plots, failure analysis and stage times "
                             "into README.md, docs/ and screenshots/ (without it, a run changes no tracked file)")
    parser.add_argument("--list", action="store_true", help="print the notebooks that would run, and exit")
    parser.add_argument("--quiet", action="store_true",
                        help="one line per notebook, instead of each cell and the notebook's output as it runs")
    args = parser.parse_args(argv)

    try:
        overrides = parse_overrides(args.overrides)
        if args.list:
            params, notebooks = plan_run(args.profile, args.start, args.only, overrides, args.publish)
            for nb in notebooks:
                names = ", ".join(sorted(notebook_parameters(nb, params))) or "no parameters"
                print(f"{nb.stem}  ({names})")
            return 0
        run_pipeline(args.profile, args.start, args.only, overrides, quiet=args.quiet, publish=args.publish)
    except NotebookFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ProfileError, PipelineError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "Terminated" if isinstance(exc, Terminated) else "Interrupted"
        print(f"{how}; the notebooks that finished keep their executed copies.", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
