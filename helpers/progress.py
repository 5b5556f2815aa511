"""Plain-text progress bars inside a notebook kernel, so the pipeline can forward them to its terminal.

In a Jupyter kernel, tqdm.auto draws widgets and the transformers Trainer an HTML table: both live
only in the notebook. The pipeline starts its kernels with `use_text_progress()` (see STARTUP), so
the same bars are written as text to the kernel's stderr, which papermill hands to the pipeline.
A notebook opened in Jupyter is not affected.
"""
from __future__ import annotations

import sys

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
