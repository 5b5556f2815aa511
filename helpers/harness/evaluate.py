"""Scoring any policy on a split the same way: batched episodes, resumable, per-task and summary tables with metadata."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from helpers.harness.episode import DEFAULT_MAX_STEPS, Episode, Policy, run_episodes
from helpers.metadata import write_json
from helpers.sandbox import Limits
from helpers.tasks.metrics import summarize
from helpers.tasks.schema import Task

log = logging.getLogger(__name__)

TASK_COLUMNS = ["task_id", "scenario_id", "scenario", "difficulty", "model", "success", "pass_pct", "steps", "error"]


def task_digest(task: Task) -> str:
    """A fingerprint of everything a task says, so a journal notices when a task file was edited."""
    return hashlib.sha256(task.model_dump_json().encode()).hexdigest()[:16]


def episode_record(episode: Episode, model: str, split: str) -> dict:
    """Everything worth keeping about one scored episode, JSON-ready."""
    return {
        "task_id": episode.task.id, "task_digest": task_digest(episode.task),
        "scenario_id": episode.task.scenario_id, "scenario": episode.task.scenario,
        "difficulty": episode.task.difficulty, "model": model, "split": split,
        "success": episode.result.success, "pass_pct": round(episode.result.pass_pct, 1),
        "steps": len(episode.steps), "error": episode.error, "seconds": round(episode.seconds, 3),
        "checks": [vars(c) for c in episode.result.checks],
        "trajectory": [vars(s) for s in episode.steps],
    }


@dataclass
class _Scored:
    """The fields metrics need, read back from a record."""

    scenario_id: str
    difficulty: int
    success: bool
    pass_pct: float


@dataclass
class Evaluation:
    model: str
    split: str
    records: list[dict]
    seconds: float
    episodes: list[Episode] = field(default_factory=list)  # those run now (resumed ones are records only)

    @property
    def per_task(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=TASK_COLUMNS + ["split"])[TASK_COLUMNS]

    @property
    def summary(self) -> dict:
        scores = summarize(_Scored(r["scenario_id"], r["difficulty"], r["success"], r["pass_pct"]) for r in self.records)
        run_now = len(self.episodes)
        row = {"model": self.model, "split": self.split, "tasks": scores["tasks"], "scenarios": scores["scenarios"],
               "tgc": round(scores["tgc"], 1), "sgc": round(scores["sgc"], 1),
               "mean_pass_pct": round(scores["mean_pass_pct"], 1),
               "avg_steps": round(sum(r["steps"] for r in self.records) / max(len(self.records), 1), 2),
               "episodes_per_s": round(run_now / self.seconds, 2) if run_now and self.seconds else None}
        for level, part in scores["by_difficulty"].items():
            row[f"tgc_d{level}"] = round(part["tgc"], 1)
            row[f"sgc_d{level}"] = round(part["sgc"], 1)
        return row


def evaluate(tasks: list[Task], policy: Policy, split: str, limits: Limits = Limits(),
             max_steps: int = DEFAULT_MAX_STEPS, batch_size: int = 32, progress: bool = True,
             resume_from: str | Path | None = None, seed: int = 0, resume_key: str | None = None) -> Evaluation:
    """Run the policy on every task, `batch_size` episodes at a time.

    With `resume_from` (a JSONL file), each finished episode is appended there as it ends, and tasks
    already in the file are not run again: an interrupted evaluation continues where it stopped.
    `resume_key` names what produced the journal (model checkpoint and settings, see `run_key`); a
    journal written under another key is set aside, so a retrained model is never scored by its
    predecessor's episodes.
    """
    return evaluate_splits({split: tasks}, policy, limits, max_steps, batch_size, progress,
                           {split: resume_from} if resume_from else None, seed, resume_key)[split]


def evaluate_splits(splits: dict[str, list[Task]], policy: Policy, limits: Limits = Limits(),
                    max_steps: int = DEFAULT_MAX_STEPS, batch_size: int = 32, progress: bool = True,
                    resume_from: dict[str, str | Path] | None = None, seed: int = 0,
                    resume_key: str | None = None) -> dict[str, Evaluation]:
    """`evaluate` for several splits in one run of batched episodes: one Evaluation per split.

    On a CPU a generation round costs about as much for 12 episodes as for 40, so a small split run on its
    own pays full price for its rounds; in one run its episodes fill the slots the other split's finished
    episodes free. `resume_from` maps a split to its journal. The run's time is shared among the splits in
    proportion to the episodes each ran, so every split's `episodes_per_s` is the rate of the whole run.
    """
    journals = {split: Path(path) for split, path in (resume_from or {}).items() if path}
    done: dict[str, dict[str, dict]] = {}
    todo: list[Task] = []
    split_of: dict[int, str] = {}
    for split, tasks in splits.items():
        journal = journals.get(split)
        if journal is not None and resume_key is not None:
            _claim_journal(journal, resume_key)
        digests = {t.id: task_digest(t) for t in tasks}
        kept = read_journal(journal) if journal is not None else {}
        # a task edited since its episode was journaled runs again (records from before digests were kept are reused)
        done[split] = {i: r for i, r in kept.items() if r.get("task_digest", digests.get(i)) == digests.get(i)}
        for task in tasks:
            if task.id not in done[split]:
                todo.append(task)
                split_of[id(task)] = split
    total = sum(len(tasks) for tasks in splits.values())
    bar = tqdm(total=total, initial=total - len(todo), desc=f"{policy.name} on {' + '.join(splits)}",
               disable=not progress)

    def finished(episode: Episode) -> None:
        split = split_of[id(episode.task)]
        record = episode_record(episode, policy.name, split)
        done[split][episode.task.id] = record
        journal = journals.get(split)
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            with journal.open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        bar.update(1)

    started = time.perf_counter()
    try:
        episodes = run_episodes(todo, policy, limits, max_steps, batch_size, seed, on_done=finished)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    evaluations = {}
    for split, tasks in splits.items():
        ran = [e for e in episodes if split_of[id(e.task)] == split]
        records = [done[split][t.id] for t in tasks if t.id in done[split]]
        evaluations[split] = Evaluation(policy.name, split, records, seconds * len(ran) / max(len(episodes), 1), ran)
    return evaluations


def read_journal(journal: Path) -> dict[str, dict]:
    """The finished episodes in a journal, by task id.

    A line that is not a whole record (a run killed during an append leaves a torn last line) is dropped
    with a warning and its task runs again; the journal is rewritten without it, so the next append starts
    on a line of its own.
    """
    if not journal.exists():
        return {}
    text = journal.read_bytes().decode("utf-8", errors="replace")  # a torn multi-byte character is a torn line
    done, kept, torn = {}, [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[record["task_id"]] = record
        except (ValueError, KeyError, TypeError):
            torn.append(number)
            continue
        kept.append(line)
    if torn or not text.endswith("\n") and text:
        if torn:
            which = f"line {torn[0]} is not a whole record" if len(torn) == 1 else \
                f"lines {', '.join(map(str, torn))} are not whole records"
            log.warning("%s: %s (a run stopped while writing): dropped, the task runs again.", journal, which)
        partial = journal.with_name(journal.name + ".rewriting")
        partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        partial.replace(journal)
    return done


def run_key(**facts) -> str:
    """What an evaluation journal depends on (checkpoint, when it was trained, prompt and step settings)."""
    return json.dumps(facts, sort_keys=True, default=str)


def _claim_journal(journal: Path, key: str) -> None:
    key_file = journal.with_name(journal.name + ".key")
    if journal.exists() and (not key_file.exists() or key_file.read_text() != key):
        stale = journal.with_name(journal.stem + ".stale.jsonl")
        journal.replace(stale)
        print(f"{journal.name} came from another model or other settings: kept as {stale.name}, starting afresh.")
    journal.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)


def save_evaluation(evaluation: Evaluation, directory: str | Path, metadata: dict) -> dict[str, Path]:
    """Write `<model>_<split>_tasks.csv`, `..._summary.csv` and `..._metadata.json` into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{evaluation.model}_{evaluation.split}"
    paths = {
        "tasks": directory / f"{stem}_tasks.csv",
        "summary": directory / f"{stem}_summary.csv",
        "metadata": directory / f"{stem}_metadata.json",
    }
    evaluation.per_task.to_csv(paths["tasks"], index=False)
    pd.DataFrame([evaluation.summary]).to_csv(paths["summary"], index=False)
    write_json(paths["metadata"], {**metadata, "model": evaluation.model, "split": evaluation.split,
                                   "wall_seconds": round(evaluation.seconds, 3), "summary": evaluation.summary})
    return paths
