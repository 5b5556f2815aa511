"""The scripted expert solves every task of every split, through the real sandbox."""
import pytest

from helpers.agent.expert import INTENTS, ExpertPolicy, restate
from helpers.harness.episode import run_episode
from helpers.harness.evaluate import evaluate
from helpers.tasks import SPLITS, build_split, load_tasks
from helpers.tasks.schema import StatusIs
from helpers.tasks.suite import DEFAULT_SCENARIOS_PER_TYPE
from tests.test_tasks import EXAMPLE


@pytest.mark.parametrize("split", SPLITS)
def test_expert_reaches_100_percent_tgc_on_every_split(split):
    tasks = build_split(split, DEFAULT_SCENARIOS_PER_TYPE[split])
    evaluation = evaluate(tasks, ExpertPolicy(), split, progress=False)
    failed = [(e.task.id, e.error, [c.name for c in e.result.checks if not c.passed]) for e in evaluation.episodes]
    failed = [f for f in failed if f[2] or f[1]]
    assert not failed, failed[:5]
    assert evaluation.summary["tgc"] == 100.0 and evaluation.summary["sgc"] == 100.0


def test_expert_acts_the_same_without_the_checks():
    # a regression guard: the expert's plan may depend on the request and the observations only
    for task in build_split("dev", 1)[::3]:
        blind = task.model_copy(update={"checks": [StatusIs()]})
        actions = [s.action for s in run_episode(task, ExpertPolicy()).steps]
        assert actions == [s.action for s in run_episode(blind, ExpertPolicy()).steps]


def test_expert_solves_a_hand_written_task_and_fails_an_impossible_one():
    (task,) = load_tasks(EXAMPLE)
    episode = run_episode(task, ExpertPolicy())
    assert episode.result.success and episode.steps[0].action.startswith("print(apis.api_docs.show_api_doc(")
    impossible = task.model_copy(update={"slots": {**task.slots, "recipient": "Nobody Known"}})
    episode = run_episode(impossible, ExpertPolicy())
    assert episode.steps[-1].action == 'apis.supervisor.complete_task(status="fail")'
    assert not episode.result.success  # the task's checks expect the payment to Bob


@pytest.mark.parametrize("slots, reason", [
    ({}, "the expert cannot do this task: the task has no slots; the expert plans from slots with an intent, "
         "one of send_money,"),
    ({"intent": "teleport"}, 'slots.intent "teleport" is not an intent the expert knows; use one of send_money,'),
    ({"intent": "send_money", "recipient": "Bob Ray"}, "the slots of intent send_money need 'slots.amount'"),
    ({"intent": "send_money", "recipient": "Bob Ray", "amount": "25"},
     "the slots of intent send_money are unusable: 'slots.amount': Input should be a valid number"),
    ({"intent": "send_money", "amount": 25}, "the slots of intent send_money are unusable: send_money needs a "
                                              "recipient or a phone_number"),
    ({"intent": "add_balance", "amount": 5, "card_last4": "1234", "card": 1},
     "the slots of intent add_balance do not include 'slots.card' (it takes amount, card_last4)"),
    # planned, but the world does not have what the slots name: the expert gives up at that step
    ({"intent": "add_balance", "amount": 5, "card_last4": "9999"},
     "the expert cannot do this task: its step failed while choosing a card: IndexError"),
])
def test_a_task_the_expert_cannot_do_is_a_failed_episode_and_evaluation_goes_on(slots, reason):
    (task,) = load_tasks(EXAMPLE)
    unplannable = task.model_copy(update={"id": "a1b2c3d_2", "slots": slots})
    evaluation = evaluate([unplannable, task], ExpertPolicy(), "custom", progress=False)
    bad, good = evaluation.records
    assert reason in bad["error"] and "\n" not in bad["error"], bad["error"]
    assert not bad["success"] and good["success"] and evaluation.summary["tgc"] == 50.0


def test_every_generated_slot_set_is_valid_for_its_intent():
    # the slot models are strict (no extra keys): they must accept everything the scenario generators write
    for split in SPLITS:
        for task in build_split(split, 1):
            model, _ = INTENTS[task.slots["intent"]]
            model.model_validate(task.slots)


def test_a_bug_in_a_plan_costs_its_episode_only(monkeypatch):
    def broken(task):
        yield from ()
        raise KeyError("balance\nand more")

    monkeypatch.setitem(INTENTS, "answer_balance", (INTENTS["answer_balance"][0], broken))
    dev = build_split("dev", 1)
    tasks = [t for t in dev if t.scenario == "send_by_name"][:2] + [t for t in dev if t.scenario == "answer_balance"][:2]
    evaluation = evaluate(tasks, ExpertPolicy(), "dev", progress=False)
    errors = {r["task_id"]: r["error"] for r in evaluation.records}
    broken_ids = {t.id for t in tasks if t.slots["intent"] == "answer_balance"}
    assert broken_ids and all(errors[i] == "the expert failed on this task (KeyError: 'balance\\nand more')"
                              for i in broken_ids)
    assert all(r["success"] for r in evaluation.records if r["task_id"] not in broken_ids)


def test_the_first_thought_restates_the_request_the_same_way_whatever_the_phrasing():
    # two phrasings of one request (train and held-out templates) open with the same canonical sentence
    by_type = {}
    for split in ("train", "test_normal"):
        for task in build_split(split, 2):
            first = ExpertPolicy().act(task, []).thought
            assert first.startswith(restate(task.slots) + " ")
            by_type.setdefault(task.scenario, set()).add(first.split(" ")[1])  # the verb of the request
    assert by_type["send_with_note"] == {"send"} and by_type["request_money"] == {"request"}
    assert restate({"intent": "send_money", "recipient": "Bo Li", "amount": 5.5, "note": "tea", "private": True}) == \
        "Task: send $5.50 to Bo Li for tea, privately."
