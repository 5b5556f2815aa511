"""Graded tasks: scenario generators, splits, task files, grading and metrics."""
from helpers.tasks.files import TaskFileError, load_tasks, save_tasks
from helpers.tasks.grading import CheckResult, TaskResult, grade, world_changes
from helpers.tasks.metrics import scenario_goal_completion, summarize, task_goal_completion
from helpers.tasks.scenarios import CHALLENGE_TYPES, SCENARIO_TYPES, TRAIN_TYPES
from helpers.tasks.schema import Task
from helpers.tasks.suite import SPLITS, build_split, build_suite

__all__ = [
    "CHALLENGE_TYPES", "SCENARIO_TYPES", "SPLITS", "TRAIN_TYPES", "CheckResult", "Task", "TaskFileError",
    "TaskResult", "build_split", "build_suite", "grade", "load_tasks", "save_tasks",
    "scenario_goal_completion", "summarize", "task_goal_completion", "world_changes",
]
