"""Single-step GRPO (`grpo_mode: step`), the contrast to whole episodes: a prompt is an expert episode up to one
step, the completion is the model's next reply, and its reward comes from running that one reply in a world
restored to the step (`helpers.rl.step_rewards`)."""
from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset

from helpers.data.files import read_jsonl
from helpers.rl.step_rewards import ExecutionRewards
from helpers.tasks import load_tasks


def step_prompts(datasets_dir: Path, count: int, seed: int) -> Dataset:
    """`count` step records of the training split, shuffled: each a prompt plus what restores its world."""
    records = read_jsonl(Path(datasets_dir) / "stepwise_train.jsonl")
    random.Random(seed).shuffle(records)
    return Dataset.from_list([{"prompt": r["prompt"], "task_id": r["task_id"], "prior_actions": r["prior_actions"]}
                              for r in records[:count]])


def step_rewards(tasks_dir: Path) -> ExecutionRewards:
    """The three single-step rewards (format, execution, goal) over the training and dev tasks."""
    tasks = {t.id: t for split in ("train", "dev") for t in load_tasks(Path(tasks_dir) / f"{split}.jsonl")}
    return ExecutionRewards(tasks)
