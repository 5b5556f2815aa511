"""How pipeline runs are kept: the run record, the run history, the executed copies, and runs killed mid-way."""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import psutil

from helpers.course.profiles import display_path

RECORD = "pipeline.json"  # the last run, kept up to date while it runs
HISTORY = "pipeline_history.jsonl"  # every run's final record, one per line
# Executed copies in results/<profile>/notebooks/: papermill writes into `.running` while a notebook runs; a
# notebook that finishes replaces its last good copy, one that fails or is stopped is kept beside it instead.
COPY_SUFFIXES = {"running": ".running.ipynb", "ok": ".ipynb", "failed": ".failed.ipynb",
                 "interrupted": ".interrupted.ipynb"}


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def executed_copy(out_dir: Path, notebook: str, status: str) -> Path:
    """Where the executed copy of `notebook` goes for a run that ended with `status`."""
    suffix = COPY_SUFFIXES.get(status, COPY_SUFFIXES["interrupted"])  # terminated and killed runs too
    return out_dir / f"{notebook}{suffix}"


def settle_copy(out_dir: Path, notebook: str, status: str) -> Path:
    """Move the running copy to its place for `status`; a good copy clears the copies of earlier failures."""
    running, final = executed_copy(out_dir, notebook, "running"), executed_copy(out_dir, notebook, status)
    if running.exists():
        running.replace(final)
    if status == "ok":
        for stale in ("failed", "interrupted"):
            executed_copy(out_dir, notebook, stale).unlink(missing_ok=True)
    return final


def this_process() -> dict:
    """What identifies this run's process later, even after its pid is reused."""
    return {"host": platform.node(), "pid": os.getpid(), "process_started": psutil.Process().create_time()}


def still_running(record: dict) -> bool:
    """Whether the process that wrote a run record still runs (only decidable on the same host)."""
    if record.get("host") != platform.node() or not isinstance(record.get("pid"), int):
        return False
    try:
        started = psutil.Process(record["pid"]).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return abs(started - float(record.get("process_started") or 0)) < 1.0


def unfinished_run(out_root: Path) -> dict | None:
    """The last run's record if it still says "running": a run that is going on, or one that was killed
    before it could say how it ended (SIGKILL, a crash, power loss)."""
    try:
        record = json.loads((out_root / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("status") == "running" else None


def record_killed(record: dict, out_root: Path, out_dir: Path) -> dict:
    """Write a killed run's record to the history as killed, and keep its partial notebook as interrupted;
    returns a summary for the next run's record."""
    record["status"] = "killed"
    record["note"] = f"the run stopped without recording how (killed or crashed); found at the next start, {now()}"
    for notebook in record.get("notebooks", []):
        if notebook.get("status") == "running":
            notebook["status"] = "killed"
            notebook["output"] = display_path(settle_copy(out_dir, notebook["notebook"], "killed"))
            print(f"The previous run of profile {record.get('profile')} (started {record.get('started_at')}) was "
                  f"killed while running {notebook['notebook']}: recorded in {HISTORY}, its partial notebook kept "
                  f"as {Path(notebook['output']).name}.", flush=True)
    append_history(out_root, record)
    running = [n["notebook"] for n in record.get("notebooks", []) if n.get("status") == "killed"]
    return {"status": "killed", "started_at": record.get("started_at"), "notebook": running[0] if running else None,
            "pid": record.get("pid")}


def save_record(out_root: Path, run: dict) -> None:
    """Write the run record; once the run has ended, add it to the history too."""
    # default=str: YAML may hold dates and the like that json cannot write natively.
    (out_root / RECORD).write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
    if run["status"] != "running":
        append_history(out_root, run)


def append_history(out_root: Path, run: dict) -> None:
    with (out_root / HISTORY).open("a", encoding="utf-8") as history:
        history.write(json.dumps(run, default=str) + "\n")
