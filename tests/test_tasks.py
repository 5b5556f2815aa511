"""Task generation, splits, task files, grading and metrics."""
import json
import re
from dataclasses import dataclass
from datetime import datetime

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



def test_a_split_with_as_many_scenarios_as_phrasings_uses_every_phrasing():
    # phrasings are taken in turn from a seeded start: as many scenarios as phrasings use each one once
    for type_name in TRAIN_TYPES:
        kind = SCENARIO_TYPES[type_name]
        count = len(kind.templates)
        tasks = [t for t in build_split("train", count) if t.scenario == type_name and t.id.endswith("_1")]
        used = [next(i for i, p in enumerate(kind.templates) if _fits(p, t.instruction)) for t in tasks]
        assert sorted(used) == list(range(count)), type_name

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


def test_the_example_task_loads():
    (task,) = load_tasks(EXAMPLE)
    assert task.instruction == "Send $25 to Bob Ray for lunch."


def _write(tmp_path, lines):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _example_record() -> dict:
    return json.loads(EXAMPLE.read_text())


def _request_status(record: dict, **fields) -> dict:
    """The example task with a pending request from Bob to Ann, and a request_status check written with `fields`."""
    record["world"]["wallet"]["payment_requests"] = [{
        "payment_request_id": 7, "requester_email": "bob.ray@example.com", "payer_email": "ann.lee@example.com",
        "amount": 30.0, "created_at": "2026-03-01T09:00:00"}]
    record["checks"][0] = {"type": "request_status", "payment_request_id": 7, **fields}
    return record


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.pop("instruction"), "line 2: field 'instruction' is missing."),
    (lambda r: r["world"]["wallet"].update(balance="lots"), "line 2: field 'world.wallet.balance': \"lots\" is text"),
    (lambda r: r["checks"].append({"type": "teleport"}),
     "line 2: field 'checks[3].type': 'teleport' is not a check type; use one of transaction_made,"),
    (lambda r: r["checks"].append({"expected": "success"}), "line 2: field 'checks[3]' has no \"type\""),
    # numbers given as text are refused, not silently converted
    (lambda r: r["checks"][0].update(amount="25"),
     "line 2: field 'checks[0].amount': \"25\" is text; write the number without quotes."),
    (lambda r: r.update(difficulty="1"), "line 2: field 'difficulty': \"1\" is text; write the whole number"),
    (lambda r: r["checks"][0].update(private="true"),
     "field 'checks[0].private': \"true\" is text; write true or false"),
    (lambda r: r["checks"][0].update(amount=float("nan")), "field 'checks[0].amount': NaN is not a number"),
    (lambda r: r.update(instruction="Pay \ud800"), "field 'instruction' holds a lone surrogate escape"),
    (lambda r: r["world"]["wallet"].update(balance=float("inf")), "field 'world.wallet.balance': Infinity is not"),
    (lambda r: r.update(difficulty=7), "line 2: field 'difficulty': Input should be less than or equal to 3"),
    (lambda r: r.update(id="other_2"), "line 2: field 'id': id 'other_2' must be '<scenario_id>_<variant>' with "
                                       "scenario_id 'a1b2c3d', e.g. 'a1b2c3d_1'."),
    (lambda r: r.update(id="my_task_1", scenario_id="my_task"),
     "line 2: field 'id': 'my_task_1' is not a task id: an id is <scenario_id>_<variant>, where the scenario id has "
     "only letters, digits and hyphens"),
    (lambda r: r.update(colour="blue"), "line 2: field 'colour' is not a field of a task; remove it or check its "
                                        "spelling: a task has the fields id, scenario_id,"),
    # a misspelt field is reported as such (with the right names), not as the field it was meant to be missing
    (lambda r: r["checks"][0].update(recieve_email=r["checks"][0].pop("receiver_email")),
     "field 'checks[0].recieve_email' is not a field of a transaction_made check; remove it or check its spelling: "
     "a transaction_made check has the fields receiver_email, amount,"),
    (lambda r: r["checks"][0].pop("amount"),
     "field 'checks[0].amount' is missing (a transaction_made check has the fields receiver_email, amount,"),
    # the field is named as the user wrote it, even when its name is also a check type ("status")
    (lambda r: _request_status(r, approved=True),
     "field 'checks[0]': the outcome goes in the field \"status\": write \"status\": \"approved\" instead of "
     "\"approved\": true."),
    (lambda r: _request_status(r), "field 'checks[0].status' is missing (a request_status check has the fields "
                                   "payment_request_id, status)."),
    # what a check names must exist in the task's world: a typo would make the task silently impossible
    (lambda r: r["checks"][0].update(receiver_email="bob.ray@exampel.com"),
     "field 'checks[0].receiver_email': no wallet user of this task's world has the email 'bob.ray@exampel.com' "
     "(users: ann.lee@example.com, bob.ray@example.com)."),
    (lambda r: r["checks"][0].update(payment_card_id=7), "field 'checks[0].payment_card_id': the world has no "
                                                         "payment card 7 (cards: 101)."),
    (lambda r: r["checks"].insert(0, {"type": "request_status", "payment_request_id": 3, "status": "denied"}),
     "field 'checks[0].payment_request_id': the world has no payment request 3 (requests: none)."),
    (lambda r: r["checks"].insert(0, {"type": "balance_added", "payment_card_id": 102, "amount": 5}),
     "field 'checks[0].payment_card_id': the world has no payment card 102"),
    (lambda r: r["checks"].insert(0, {"type": "payment_request_made", "payer_email": "cy@x.com", "amount": 5}),
     "field 'checks[0].payer_email': no wallet user of this task's world has the email 'cy@x.com'"),
    (lambda r: r["world"]["payment_cards"][0].update(card_number="1234"),
     "field 'world.payment_cards[0].card_number': '1234' should be 16 digits"),
    (lambda r: r["world"].update(now="yesterday"), "field 'world.now': \"yesterday\" is not a timestamp; write one "
                                                   "like \"2026-03-14T10:00:00\"."),
    (lambda r: r.update(checks=[{"type": "no_other_changes"}]),
     "field 'checks': a task needs a check besides no_other_changes, or doing nothing would pass it; add e.g. "
     "{\"type\": \"status\", \"expected\": \"success\"}."),
    (lambda r: r["checks"].append({"type": "answer", "expected": []}),
     "field 'checks[3].expected': an empty list accepts no answer: give at least one."),
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


def test_a_pending_request_sent_to_the_supervisor_can_be_checked():
    record = _request_status(_example_record(), status="approved")
    task = Task.model_validate(record)
    assert task.checks[0].status == "approved"
    record["world"]["wallet"]["payment_requests"][0]["status"] = "approved"
    with pytest.raises(ValueError, match="payment request 7 cannot change status: only a pending request"):
        Task.model_validate(record)


@pytest.mark.parametrize("content, expected", [
    ("é".encode("latin-1") + b"\n", "line 1 is not UTF-8 text (byte 0xe9 at column 1): save the file with the UTF-8 "
                                      "encoding."),
    (b"[" * 100_000 + b"]" * 100_000, "line 1: nested far too deeply; a task needs at most 32 levels."),
    (b'{"slots": {"a": ' + b"[" * 200 + b"]" * 200 + b"}}", "field 'slots.a[0]...' nests 33+ levels deep"),
    (b'{"id": ', "line 1: not valid JSON (Expecting value at column 8)."),
    (b"[1, 2]\n", "line 1: a task is a JSON object {...}, not a list."),
    (b"\n  \n", "holds no tasks: write one JSON task per line."),
], ids=["latin-1", "deeper than json reads", "deep", "broken", "a list", "empty"])
def test_an_unreadable_file_is_one_sentence(tmp_path, content, expected):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(content)
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_broken_json_duplicates_folders_and_missing_files_are_one_sentence(tmp_path):
    record = json.dumps(_example_record())
    with pytest.raises(TaskFileError, match=r"line 2: field 'id': task id 'a1b2c3d_1' appears twice"):
        load_tasks(_write(tmp_path, [record, record]))
    with pytest.raises(TaskFileError, match="does not exist: check the path."):
        load_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(TaskFileError, match=r"is a folder, not a task file: give the path of a .jsonl file \(it holds "
                                            r"tasks.jsonl\)."):
        load_tasks(tmp_path)


def test_time_zones_are_converted_to_utc_and_a_byte_order_mark_is_ignored(tmp_path):
    record = _example_record()
    record["world"]["now"] = "2026-03-14T12:00:00+02:00"
    record["world"]["wallet"]["transactions"] = [{
        "transaction_id": 1, "sender_email": "ann.lee@example.com", "receiver_email": "bob.ray@example.com",
        "amount": 5, "created_at": "2026-03-14T09:00:00Z"}]
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(record).encode())
    (task,) = load_tasks(path)
    assert task.world.now == datetime(2026, 3, 14, 10, 0) and task.world.now.tzinfo is None
    assert task.world.wallet.transactions[0].created_at == datetime(2026, 3, 14, 9, 0)
    # the date filters compare these with the sandbox's clock: zoned and unzoned times cannot be compared
    world = World(task.world)
    token = world.call("wallet", "login", [], {"username": "ann.lee@example.com", "password": "w-pass"})["access_token"]
    found = world.call("wallet", "show_transactions", [],
                       {"access_token": token, "min_created_at": "2026-03-14T08:00:00"})
    assert [t["transaction_id"] for t in found] == [1]


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


@pytest.mark.parametrize("check, given, accepted", [
    ({"expected": 42.5}, "$42.50", True),
    ({"expected": 42.5}, "Your balance is $42.50.", False),
    ({"expected": 42.5, "match": "contains"}, "Your balance is $42.50.", True),
    ({"expected": 42.5, "match": "contains"}, "Your balance is $1,042.50.", False),
    ({"expected": ["Bob Ray", "Bob"]}, "bob", True),
    ({"expected": ["Bob Ray", "Bob"]}, "Cy", False),
    ({"expected": "ann", "match": "contains"}, "It was Ann.", True),
    ({"expected": "ann", "match": "contains"}, "It was Joanne.", False),  # whole words only
    ({"expected": [12, "twelve"], "match": "contains"}, "I sent twelve dollars", True),
])
def test_answer_checks_take_alternatives_and_a_contains_mode(check, given, accepted):
    record = _example_record()
    record["checks"] = [{"type": "answer", **check}]
    task = Task.model_validate(record)
    result = _play(task, complete=("success", given))
    assert result.success is accepted
    assert result.checks[0].name.startswith("answer contains" if check.get("match") else "answer is")


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


def test_build_suite_never_overwrites_a_split_file_it_did_not_write(tmp_path, caplog):
    sizes = {s: 1 for s in SPLITS}
    paths = build_suite(seed=1, scenarios_per_type=sizes, directory=tmp_path)
    generated = paths["dev"].read_text()
    assert build_suite(seed=1, scenarios_per_type=sizes, directory=tmp_path) == paths  # its own files: rewritten
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == sorted(p.name for p in paths.values())

    mine = json.dumps(_example_record()) + "\n"
    paths["dev"].write_text(mine)  # the user's own tasks, where a split is written
    build_suite(seed=2, scenarios_per_type=sizes, directory=tmp_path)
    assert (tmp_path / "dev.kept-1.jsonl").read_text() == mine
    assert paths["dev"].read_text() != generated and load_tasks(paths["dev"])  # the new split is in place
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "dev.kept-1.jsonl" in caplog.records[0].getMessage()
    assert not (tmp_path / "train.kept-1.jsonl").exists()  # other splits were its own: no copies
