"""Live progress of a pipeline run: which cell runs, and the notebook's output and progress bars, in the terminal.

Two sides. In the terminal, papermill hands each kernel stream to a `Forward`, and nbclient calls a
`cell_announcer` as each code cell starts. In the kernel, tqdm.auto would draw widgets and the
transformers Trainer an HTML table, which live only in the notebook: the pipeline starts its kernels
with `use_text_progress()` (see STARTUP), so the same bars are written as text to the kernel's stderr.
A notebook opened in Jupyter is not affected.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import nbformat

# run by each kernel the pipeline starts (IPython's exec_lines); without the helpers package it does nothing
STARTUP = ("try:\n    from helpers.progress import use_text_progress\nexcept ImportError:\n    pass\n"
           "else:\n    use_text_progress()")


def use_text_progress() -> None:
    """Make tqdm.auto the console tqdm, and the Trainer's progress callback its console one, from now on."""
    import tqdm.auto
    import tqdm.autonotebook
    import tqdm.std

    # datasets, huggingface_hub and transformers look these names up in tqdm.auto
    for module in (tqdm.auto, tqdm.autonotebook):
        module.tqdm, module.trange = tqdm.std.tqdm, tqdm.std.trange
    _text_trainer_progress()
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        # transformers picks the Trainer's progress callback when transformers.trainer is first imported,
        # which happens in some cell; importing it here would cost every kernel seconds, so check before each cell
        shell.events.register("pre_run_cell", _text_trainer_progress)


def _text_trainer_progress(*_) -> None:
    trainer = sys.modules.get("transformers.trainer")
    if trainer is not None:
        trainer.DEFAULT_PROGRESS_CALLBACK = trainer.ProgressCallback


class Forward:
    """A file-like papermill writes a kernel stream into: passed on to the terminal, indented under its notebook.

    Carriage returns are kept (and indented after), so a tqdm bar redraws in place as it does in a console.
    """

    def __init__(self, stream, indent: str = "    "):
        self.stream, self.indent, self.line_start = stream, indent, True

    def write(self, text: str) -> int:
        out = []
        for char in text:
            if self.line_start and char not in "\r\n":
                out.append(self.indent)
                self.line_start = False
            out.append(char)
            if char in "\r\n":
                self.line_start = True
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def cell_announcer(notebook: Path, has_injected: bool):
    """An nbclient `on_cell_execute` hook printing which code cell starts, numbered among the code cells."""
    nb = nbformat.read(notebook, as_version=4)
    total = sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells) + has_injected
    count = 0

    def announce(cell, cell_index, **_):
        nonlocal count
        count += 1
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags:
            label = "(the profile's parameters)"
        elif "parameters" in tags:
            label = "(the notebook's default parameters)"
        else:
            lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
            code = [line for line in lines if not line.startswith("#")]
            label = (code or lines or [""])[0]
            label = label if len(label) <= 80 else label[:77] + "..."
        print(f"  cell {count}/{total}: {label}", flush=True)

    return announce


def live_progress_options(notebook: Path, parameters: dict) -> dict:
    """papermill/nbclient settings for live progress: which cell runs, and the kernel's output as it comes."""
    return {
        "on_cell_execute": cell_announcer(notebook, bool(parameters)),
        "stdout_file": Forward(sys.stdout),
        "stderr_file": Forward(sys.stderr),
    }


@contextlib.contextmanager
def slower_bars_in_logs():
    """Written to a log rather than a terminal, a redrawn bar is a new line each time: redraw every 10 s at most."""
    if sys.stderr.isatty() or "TQDM_MININTERVAL" in os.environ:
        yield
        return
    os.environ["TQDM_MININTERVAL"] = "10"  # read by tqdm in the kernel, which inherits this environment
    try:
        yield
    finally:
        os.environ.pop("TQDM_MININTERVAL", None)
