"""Bring your own tasks: the helper the inference notebooks call for `extra_task_files`, and the README's word."""
import json

import pandas as pd
import pytest

from helpers.custom_tasks import evaluate_task_files, load_task_files
from helpers.expert import ExpertPolicy
from helpers.paths import DATA_DIR
from helpers.tasks import TaskFileError

EXAMPLE = DATA_DIR / "examples" / "example_task.jsonl"


def _example() -> dict:
    return json.loads(EXAMPLE.read_text())


class CountingExpert(ExpertPolicy):
    def __init__(self):
        self.started = []

    def act(self, task, history):
        if not history:
            self.started.append(task.id)
        return super().act(task, history)


def test_paths_are_read_from_the_repository_root_and_one_path_needs_no_list():
    (task_file,) = load_task_files("data/examples/example_task.jsonl")
    assert task_file.path == EXAMPLE and task_file.name == "example_task" and len(task_file.tasks) == 1
    assert load_task_files([]) == [] and load_task_files(None) == []


def test_every_file_is_checked_before_anything_runs(tmp_path):
    bad = tmp_path / "mine.jsonl"
    bad.write_text(json.dumps({**_example(), "difficulty": "2"}) + "\n")
    with pytest.raises(TaskFileError, match=r"mine.jsonl line 1: field 'difficulty': \"2\" is text"):
        load_task_files([EXAMPLE, bad])
    (tmp_path / "example_task.jsonl").write_text(EXAMPLE.read_text())
    with pytest.raises(TaskFileError, match="have the same name 'example_task', which names their result files"):
        load_task_files([EXAMPLE, tmp_path / "example_task.jsonl"])


def test_task_files_are_scored_into_their_own_results_and_a_report(tmp_path, capsys):
    mine = tmp_path / "my_tasks.jsonl"
    no_plan = {**_example(), "id": "a1b2c3d_2", "slots": {"intent": "send_monee"}}
    mine.write_text(json.dumps(_example()) + "\n" + json.dumps(no_plan) + "\n")
    out = tmp_path / "custom"
    files = load_task_files([mine, EXAMPLE])

    policy = CountingExpert()
    rows = evaluate_task_files(files, policy, out, {"profile": "test"}, resume_key="expert", progress=False)
    assert list(rows["split"]) == ["my_tasks", "example_task"] and list(rows["tgc"]) == [50.0, 100.0]
    kinds = ("episodes.jsonl", "episodes.jsonl.key", "metadata.json", "summary.csv", "tasks.csv")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"expert_{name}_{kind}" for name in ("my_tasks", "example_task") for kind in kinds] + ["report.md"])
    per_task = pd.read_csv(out / "expert_my_tasks_tasks.csv")
    assert list(per_task["success"]) == [True, False]
    assert "slots.intent \"send_monee\" is not an intent the expert knows" in per_task["error"][1]
    assert json.loads((out / "expert_my_tasks_metadata.json").read_text())["task_file"] == str(mine)
    printed = capsys.readouterr().out
    assert "my_tasks (2 tasks): expert TGC 50.0, SGC 0.0, mean pass" in printed and "report.md" in printed

    report = (out / "report.md").read_text()
    assert "## my_tasks" in report and "| expert | 2 | 50.0 | 0.0 |" in report
    assert "| a1b2c3d_2 | expert | False |" in report and "completed with status 'success' (status: never completed)" \
        in report

    # a rerun resumes from the journals; after an edit only the changed task runs again
    policy = CountingExpert()
    evaluate_task_files(load_task_files([mine, EXAMPLE]), policy, out, {}, resume_key="expert", progress=False)
    assert policy.started == []
    fixed = {**no_plan, "slots": {**_example()["slots"]}}
    mine.write_text(json.dumps(_example()) + "\n" + json.dumps(fixed) + "\n")
    rows = evaluate_task_files(load_task_files([mine]), policy, out, {}, resume_key="expert", progress=False)
    assert policy.started == ["a1b2c3d_2"] and list(rows["tgc"]) == [100.0]
