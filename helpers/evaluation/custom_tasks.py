"""Your own task files (the `extra_task_files` parameter), scored by the same harness as the splits, with a report."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from helpers.course.profiles import display_path
from helpers.course.report import MODEL_ORDER
from helpers.harness.episode import Policy
from helpers.harness.evaluate import evaluate, read_journal, save_evaluation
from helpers.paths import REPO_ROOT
from helpers.tasks import Task, TaskFileError, load_tasks

REPORT = "report.md"


@dataclass
class TaskFile:
    name: str  # the file's stem: it names the result files, as a split name does
    path: Path
    tasks: list[Task]
    digest: str


def load_task_files(files: str | Path | Iterable[str | Path] | None) -> list[TaskFile]:
    """Read and check every file before anything runs, so a bad file costs seconds, not an evaluation.

    A relative path starts at the repository root (where the pipeline is run from); a single path may
    be given without a list.
    """
    if not files:
        return []
    if isinstance(files, (str, Path)):
        files = [files]
    loaded: list[TaskFile] = []
    for given in files:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else REPO_ROOT / path
        tasks = load_tasks(path)
        same = [f for f in loaded if f.name == path.stem]
        if same:
            raise TaskFileError(f"Task files {same[0].path} and {path} have the same name '{path.stem}', which names "
                                "their result files: rename one of them.")
        loaded.append(TaskFile(path.stem, path, tasks, hashlib.sha256(path.read_bytes()).hexdigest()[:16]))
    return loaded


def evaluate_task_files(task_files: list[TaskFile], policy: Policy, directory: str | Path, metadata: dict,
                        resume_key: str | None = None, **settings) -> pd.DataFrame:
    """Score `policy` on each file like on a split: journal `<model>_<file>_episodes.jsonl`, per-task and
    summary CSVs and metadata in `directory`; then rewrite the report there. Returns one summary row per file.

    `settings` are passed to `evaluate` (max_steps, batch_size, seed, progress).
    """
    directory = Path(directory)
    rows = []
    for task_file in task_files:
        # an edited task is noticed by the journal itself (each record keeps its task's digest)
        evaluation = evaluate(task_file.tasks, policy, task_file.name, resume_key=resume_key,
                              resume_from=directory / f"{policy.name}_{task_file.name}_episodes.jsonl", **settings)
        save_evaluation(evaluation, directory, {**metadata, "task_file": str(task_file.path),
                                                "task_file_sha256": task_file.digest})
        rows.append(evaluation.summary)
        summary = evaluation.summary
        tasks = f"{summary['tasks']} task" + ("s" if summary["tasks"] != 1 else "")
        print(f"{task_file.name} ({tasks}): {policy.name} TGC {summary['tgc']:.1f}, "
              f"SGC {summary['sgc']:.1f}, mean pass {summary['mean_pass_pct']:.1f}%", flush=True)
    if task_files:
        print(f"Report: {display_path(write_report(directory))}", flush=True)
    return pd.DataFrame(rows)


def write_report(directory: str | Path) -> Path:
    """`report.md` in `directory`: TGC, SGC and mean pass % of every model on every task file scored there,
    then each task with the checks it failed and why its episode ended."""
    directory = Path(directory)
    summaries = [pd.read_csv(p) for p in sorted(directory.glob("*_summary.csv"))]
    summaries = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=["split", "model"])
    lines = ["# Your task files", ""]
    summaries = summaries.sort_values("model", key=lambda models: models.map(_model_rank), kind="stable")
    for name, part in summaries.groupby("split", sort=True):
        lines += [f"## {name}", "", _markdown(part[["model", "tasks", "tgc", "sgc", "mean_pass_pct"]].rename(
            columns={"tgc": "TGC %", "sgc": "SGC %", "mean_pass_pct": "mean pass %"})), ""]
        tasks = []
        for model in part["model"]:
            rows = pd.read_csv(directory / f"{model}_{name}_tasks.csv")
            journal = read_journal(directory / f"{model}_{name}_episodes.jsonl")
            rows["failed checks"] = [_failed_checks(journal.get(task_id)) for task_id in rows["task_id"]]
            tasks.append(rows)
        table = pd.concat(tasks, ignore_index=True).sort_values("task_id", kind="stable")
        lines += [_markdown(table[["task_id", "model", "success", "pass_pct", "steps", "failed checks", "error"]]
                            .rename(columns={"pass_pct": "pass %"}).astype(object).fillna("")), ""]
    path = directory / REPORT
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _model_rank(model: str) -> tuple:
    """The comparison's order (base, fine-tuned models, expert), then by name."""
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


def _failed_checks(record: dict | None) -> str:
    if record is None:
        return ""
    return "; ".join(c["name"] + (f": {c['detail']}" if c.get("detail") else "")
                     for c in record["checks"] if not c["passed"])


def _markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    rows = [" | ".join(map(cell, frame.columns)), " | ".join("---" for _ in frame.columns)]
    rows += [" | ".join(cell(v) for v in values) for values in frame.itertuples(index=False)]
    return "\n".join(f"| {row} |" for row in rows)
