"""Task generation, splits, task files, grading and metrics."""
import json
import re
from dataclasses import dataclass

import pytest

from helpers.paths import DATA_DIR
from helpers.tasks import (
    CHALLENGE_TYPES, SCENARIO_TYPES, SPLITS, TRAIN_TYPES, Task, TaskFileError, build_split, build_suite, grade,
    load_tasks, save_tasks, scenario_goal_completion, summarize, task_goal_completion,
)
from helpers.tasks.grading import answers_match
from helpers.tasks.people import NAME_POOLS
from helpers.world import World

EXAMPLE = DATA_DIR / "examples" / "example_task.jsonl"


@pytest.fixture(scope="module")
def suite():
    return {split: build_split(split, 2) for split in SPLITS}


def test_at_least_fifteen_scenario_types_with_three_difficulties():
    assert len(SCENARIO_TYPES) >= 15
    assert {kind.difficulty for kind in SCENARIO_TYPES.values()} == {1, 2, 3}
    assert set(TRAIN_TYPES).isdisjoint(CHALLENGE_TYPES)


def test_splits_have_scenarios_of_three_variants_and_appworld_ids(suite):
    for split, tasks in suite.items():
        by_scenario = {}
        for task in tasks:
            assert task.id.startswith(task.scenario_id + "_") and len(task.scenario_id) == 7
            by_scenario.setdefault(task.scenario_id, []).append(task)
        assert all(len(v) == 3 for v in by_scenario.values()), split
        for variants in by_scenario.values():  # variants differ in people, amounts or world state
            assert len({v.world.model_dump_json() for v in variants}) == 3
    assert len({t.id for tasks in suite.values() for t in tasks}) == sum(len(t) for t in suite.values())


def test_challenge_types_never_appear_in_train_and_test_people_are_unseen(suite):
    train_types = {t.scenario for t in suite["train"] + suite["dev"]}
    assert train_types == set(TRAIN_TYPES)
    assert {t.scenario for t in suite["test_challenge"]} == set(CHALLENGE_TYPES)
    assert train_types.isdisjoint(t.scenario for t in suite["test_challenge"])
    seen_first = set(NAME_POOLS["seen"][0])
    for task in suite["test_normal"] + suite["test_challenge"]:
        names = {c.first_name for c in task.world.contacts} | {task.world.supervisor.first_name}
        assert names.isdisjoint(seen_first)


def test_test_normal_uses_phrasings_that_train_never_uses(suite):
    def template_of(task):
        kind = SCENARIO_TYPES[task.scenario]
        return next(t for t in kind.templates + kind.held_out if _fits(t, task.instruction))
    train_templates = {template_of(t) for t in suite["train"] + suite["dev"]}
    normal_templates = {template_of(t) for t in suite["test_normal"]}
    assert train_templates.isdisjoint(normal_templates)


def _fits(template: str, instruction: str) -> bool:
    pattern = re.sub(r"\\\{\w+\\\}", ".+", re.escape(template))
    return re.fullmatch(pattern, instruction) is not None


def test_generation_is_deterministic_and_seed_dependent():
    assert [t.model_dump_json() for t in build_split("dev", 1, seed=3)] == \
           [t.model_dump_json() for t in build_split("dev", 1, seed=3)]
    assert build_split("dev", 1, seed=3)[0].id != build_split("dev", 1, seed=4)[0].id


def test_suite_round_trips_through_jsonl(tmp_path):
    paths = build_suite(seed=1, scenarios_per_type={s: 1 for s in SPLITS}, directory=tmp_path)
    for split, path in paths.items():
        assert [t.model_dump() for t in load_tasks(path)] == [t.model_dump() for t in build_split(split, 1, seed=1)]


def test_the_readme_example_task_loads():
    (task,) = load_tasks(EXAMPLE)
    assert task.instruction == "Send $25 to Bob Ray for lunch."


def _write(tmp_path, lines):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _example_record() -> dict:
    return json.loads(EXAMPLE.read_text())


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.pop("instruction"), "line 2: field 'instruction' is missing."),
    (lambda r: r["world"]["wallet"].update(balance="lots"), "line 2: field 'world.wallet.balance'"),
    (lambda r: r["checks"].append({"type": "teleport"}), "line 2: field 'checks.3'"),
    (lambda r: r["checks"][0].update(amount="25 dollars"), "line 2: field 'checks.0.amount'"),
    (lambda r: r.update(difficulty=7), "line 2: field 'difficulty': Input should be less than or equal to 3"),
    (lambda r: r.update(id="other_1"), "line 2: Value error, id 'other_1' must be '<scenario_id>_<variant>'"),
    (lambda r: r.update(colour="blue"), "line 2: field 'colour': Extra inputs are not permitted"),
])
def test_a_malformed_task_names_the_line_and_field(tmp_path, mutate, expected):
    good = _example_record()
    bad = _example_record()
    bad["id"] = bad["scenario_id"] + "_2"
    mutate(bad)
    path = _write(tmp_path, [json.dumps(good), json.dumps(bad)])
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_broken_json_duplicates_and_missing_files_are_one_sentence(tmp_path):
    with pytest.raises(TaskFileError, match=r"line 1: not valid JSON"):
        load_tasks(_write(tmp_path, ['{"id": ']))
    record = json.dumps(_example_record())
    with pytest.raises(TaskFileError, match=r"line 2: field 'id': task id 'a1b2c3d_1' appears twice"):
        load_tasks(_write(tmp_path, [record, record]))
    with pytest.raises(TaskFileError, match="does not exist"):
        load_tasks(tmp_path / "nope.jsonl")


def _play(task: Task, *calls, complete=("success", None)):
    world = World(task.world)
    token = world.call("wallet", "login", [], {"username": task.world.supervisor.email,
                                                "password": task.world.passwords["wallet"]})["access_token"]
    for api, kwargs in calls:
        world.call("wallet", api, [], {"access_token": token, **kwargs})
    if complete:
        world.call("supervisor", "complete_task", [], {"status": complete[0], "answer": complete[1]})
    return grade(task, world.state, world.completion)


def test_grading_rewards_the_right_change_and_catches_collateral_damage():
    (task,) = load_tasks(EXAMPLE)
    pay = ("send_money", {"receiver_email": "bob.ray@example.com", "amount": 25, "description": "Lunch!"})
    right = _play(task, pay)
    assert right.success and right.pass_pct == 100.0
    twice = _play(task, pay, pay)
    assert not twice.success and [c.name for c in twice.checks if not c.passed] == ["no other changes"]
    assert "unexpected: payment of $25.00 to bob.ray@example.com" in twice.checks[-1].detail
    wrong_amount = _play(task, ("send_money", {"receiver_email": "bob.ray@example.com", "amount": 24,
                                               "description": "lunch"}))
    assert not wrong_amount.success and wrong_amount.pass_pct == pytest.approx(100 / 3)
    unfinished = _play(task, pay, complete=None)
    assert [c.passed for c in unfinished.checks] == [True, False, True]


def test_answers_are_normalised():
    assert answers_match("$1,234.50", 1234.5) and answers_match(" 12.5 ", 12.50) and answers_match(40, "40.00")
    assert answers_match("Bob Ray.", "bob ray") and not answers_match("12.51", 12.5)
    assert not answers_match(None, 0) and answers_match(None, None)


@dataclass
class Outcome:
    scenario_id: str
    difficulty: int
    success: bool
    pass_pct: float


def test_tgc_sgc_and_difficulty_breakdown():
    results = [Outcome("a", 1, True, 100), Outcome("a", 1, True, 100), Outcome("a", 1, False, 50),
               Outcome("b", 2, True, 100), Outcome("b", 2, True, 100), Outcome("b", 2, True, 100)]
    assert task_goal_completion(results) == pytest.approx(500 / 6)
    assert scenario_goal_completion(results) == 50.0
    summary = summarize(results)
    assert summary["by_difficulty"][1]["sgc"] == 0.0 and summary["by_difficulty"][2]["tgc"] == 100.0
    assert summary["mean_pass_pct"] == pytest.approx(550 / 6)


def test_save_tasks_writes_one_line_per_task(tmp_path):
    tasks = build_split("test_challenge", 1)
    path = save_tasks(tasks, tmp_path / "x.jsonl")
    assert len(path.read_text().splitlines()) == len(tasks)
