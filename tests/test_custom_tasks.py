"""Bring your own tasks: the helper the inference notebooks call for `extra_task_files`, and the word of its page
(docs/your-own-tasks.md)."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import paths
from helpers.agent.expert import INTENTS, ExpertPolicy
from helpers.evaluation.custom_tasks import evaluate_task_files, load_task_files
from helpers.paths import DATA_DIR
from helpers.tasks import TaskFileError, load_tasks
from helpers.tasks.schema import CHECK_TYPES

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
    assert "| a1b2c3d_2 | expert | False |" in report and "completed with status 'success': status: never completed" \
        in report

    # a rerun resumes from the journals; after an edit only the changed task runs again
    policy = CountingExpert()
    evaluate_task_files(load_task_files([mine, EXAMPLE]), policy, out, {}, resume_key="expert", progress=False)
    assert policy.started == []
    fixed = {**no_plan, "slots": {**_example()["slots"]}}
    mine.write_text(json.dumps(_example()) + "\n" + json.dumps(fixed) + "\n")
    rows = evaluate_task_files(load_task_files([mine]), policy, out, {}, resume_key="expert", progress=False)
    assert policy.started == ["a1b2c3d_2"] and list(rows["tgc"]) == [100.0]


def _page() -> str:
    return (paths.DOCS_DIR / "your-own-tasks.md").read_text()


def _row(section: str, first_cell: str) -> list[str]:
    """The cells of the page's table row whose first cell starts with `first_cell`."""
    (line,) = [line for line in section.splitlines() if line.startswith(f"| {first_cell}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_pages_example_is_the_example_file():
    section = _page()
    shown = section[section.index("```json\n") + 8:]
    assert json.loads(shown[:shown.index("```")]) == _example()


def test_the_page_documents_every_check_field_and_whether_it_is_required():
    section = _page()
    for model in CHECK_TYPES:
        kind = model.model_fields["type"].default
        _, required, optional, meaning = _row(section, f"`{kind}` |")
        fields = {name: info.is_required() for name, info in model.model_fields.items() if name != "type"}
        assert {f for f in fields if fields[f]} == {f for f in fields if f"`{f}`" in required}, kind
        assert {f for f in fields if not fields[f]} == {f for f in fields if f"`{f}`" in optional}, kind
        assert meaning


def test_the_page_documents_every_intent_and_its_slots():
    section = _page()
    documented = set()
    for line in section.splitlines():
        if line.startswith("| `") and "|" in line[2:]:
            documented |= {name for name in re.findall(r"`(\w+)`", line.split("|")[1]) if name in INTENTS}
    assert documented == set(INTENTS)
    for intent, (model, _) in INTENTS.items():
        (cells,) = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
                    if line.startswith("| `") and f"`{intent}`" in line.split("|")[1]]
        slots = {name for name in model.model_fields if name != "intent"}
        assert slots == {name for name in slots if f"`{name}`" in cells[1]}, intent


# Each example message of the page, and the change to the example task that produces it on line 2 (or 3)
PAGE_ERRORS = [
    lambda r: r["checks"][0].update(amount="25"),
    lambda r: r["checks"][0].update(receiver_email="bob.ray@exampel.com"),
    lambda r: r["world"]["wallet"].update(payment_requests=[{
        "payment_request_id": 7, "requester_email": "bob.ray@example.com", "payer_email": "ann.lee@example.com",
        "amount": 30.0, "created_at": "2026-03-01T09:00:00"}]) or r["checks"].__setitem__(
        0, {"type": "request_status", "payment_request_id": 7, "approved": True}),
    lambda r: r.update(id="my_task_1", scenario_id="my_task"),
]


def test_the_pages_error_examples_are_what_the_loader_says(tmp_path, monkeypatch):
    section = _page()
    block = section[section.index("```text\n") + 8:]
    shown = block[:block.index("```")].strip().splitlines()
    assert len(shown) == len(PAGE_ERRORS) + 1
    monkeypatch.chdir(tmp_path)
    for mutate, expected in zip(PAGE_ERRORS, shown):
        bad = {**_example(), "id": "a1b2c3d_2"}
        mutate(bad)
        Path("my_tasks.jsonl").write_text(json.dumps(_example()) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(TaskFileError) as caught:
            load_tasks("my_tasks.jsonl")
        assert str(caught.value) == expected
    # the last one: a line written in another encoding
    lines = [json.dumps(_example()), json.dumps({**_example(), "id": "a1b2c3d_2"})]
    Path("my_tasks.jsonl").write_bytes("\n".join(lines).encode() + '\n{"instruction": "Pay Zoë"}'.encode("latin-1"))
    with pytest.raises(TaskFileError) as caught:
        load_tasks("my_tasks.jsonl")
    assert str(caught.value) == shown[-1]
