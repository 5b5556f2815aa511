"""Scoring a policy on a split: episodes in parallel, per-task and summary tables, files with metadata."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from helpers.episode import DEFAULT_MAX_STEPS, Episode, Policy, run_episode
from helpers.metadata import write_json
from helpers.sandbox import Limits
from helpers.tasks.metrics import summarize
from helpers.tasks.schema import Task


@dataclass
class Evaluation:
    model: str
    split: str
    episodes: list[Episode]
    seconds: float

    @property
    def per_task(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "task_id": e.task.id, "scenario_id": e.task.scenario_id, "scenario": e.task.scenario,
            "difficulty": e.task.difficulty, "model": self.model, "success": e.result.success,
            "pass_pct": round(e.result.pass_pct, 1), "steps": len(e.steps), "error": e.error,
        } for e in self.episodes])

    @property
    def summary(self) -> dict:
        scores = summarize(e.result for e in self.episodes)
        row = {"model": self.model, "split": self.split, "tasks": scores["tasks"], "scenarios": scores["scenarios"],
               "tgc": round(scores["tgc"], 1), "sgc": round(scores["sgc"], 1),
               "mean_pass_pct": round(scores["mean_pass_pct"], 1),
               "avg_steps": round(sum(len(e.steps) for e in self.episodes) / max(len(self.episodes), 1), 2),
               "episodes_per_s": round(len(self.episodes) / self.seconds, 2) if self.seconds else None}
        for level, part in scores["by_difficulty"].items():
            row[f"tgc_d{level}"] = round(part["tgc"], 1)
            row[f"sgc_d{level}"] = round(part["sgc"], 1)
        return row


def evaluate(tasks: list[Task], policy: Policy, split: str, limits: Limits = Limits(),
             max_steps: int = DEFAULT_MAX_STEPS, workers: int = 2, progress: bool = True) -> Evaluation:
    """Run the policy on every task; episodes are independent, so they run on a small thread pool."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(lambda task: run_episode(task, policy, limits, max_steps), tasks)
        episodes = list(tqdm(jobs, total=len(tasks), desc=f"{policy.name} on {split}", disable=not progress))
    return Evaluation(policy.name, split, episodes, time.perf_counter() - started)


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
