"""Conversational evaluation: chats with the simulated user, batched rounds, the honest scripted assistant, scores."""
import csv
import dataclasses
import json
import random

import pytest

from helpers.agent.chat_protocol import chat_action
from helpers.agent.prompts import format_completion
from helpers.data.conversations import build_conversations
from helpers.evaluation.chats import (
    GO_AHEAD, ChatOutcome, ScriptedChatAssistant, chat_cases, play_chats, save_chat_evaluation, summarize_chats,
    understand,
)
from helpers.tasks.schema import NoOtherChanges
from helpers.tasks.worlds import format_amount
from helpers.world.state import Contact

ASK_AMOUNT = "How much should I send?"


@pytest.fixture(scope="module")
def cases():
    return chat_cases(40)


class FakeBackend:
    """Replies by a rule of (chat, case); logs how many chats each generate call received."""

    name = "fake"

    def __init__(self, cases, rule):
        self.case_of = {case.opening: case for case in cases}
        self.rule = rule
        self.batch_sizes = []

    def generate(self, chats):
        self.batch_sizes.append(len(chats))
        for chat in chats:  # only chats waiting for a reply are sent
            assert chat[-1]["role"] in ("user", "tool")
        return [self.rule(chat, self.case_of[chat[1]["content"]]) for chat in chats]


def _assistant_replies(chat):
    return sum(m["role"] == "assistant" for m in chat)


def _acts_after(questions, goal_of=lambda case: case.goal):
    """Ask for the amount `questions(case)` times, then act with the code for `goal_of(case)`, then confirm."""
    def rule(chat, case):
        if chat[-1]["role"] == "tool":
            return "Done."
        if _assistant_replies(chat) < questions(case):
            return ASK_AMOUNT
        return format_completion(*chat_action(goal_of(case)))
    return rule


def test_asking_then_acting_correctly_succeeds_in_the_expected_turns(cases):
    case = cases[0]
    [outcome] = play_chats([case], FakeBackend(cases, _acts_after(lambda c: 1)))
    assert outcome.success and outcome.ended == "acted"
    assert (outcome.user_turns, outcome.assistant_turns) == (2, 3)
    assert [m["role"] for m in outcome.transcript] == ["system", "user", "assistant", "user", "assistant", "tool",
                                                        "assistant"]
    assert format_amount(case.goal.amount) in outcome.transcript[3]["content"]  # the user answered the question
    assert outcome.questions == 1


def test_acting_with_the_wrong_amount_fails(cases):
    wrong = _acts_after(lambda c: 1, lambda c: dataclasses.replace(c.goal, amount=c.goal.amount + 1))
    [outcome] = play_chats([cases[0]], FakeBackend(cases, wrong))
    assert not outcome.success and outcome.ended == "acted"


def test_never_acting_ends_at_max_turns_as_a_failure(cases):
    [outcome] = play_chats([cases[0]], FakeBackend(cases, lambda chat, case: ASK_AMOUNT), max_turns=3)
    assert not outcome.success and outcome.ended == "max_turns"
    assert (outcome.assistant_turns, outcome.user_turns) == (3, 3)
    assert all(m["role"] != "tool" for m in outcome.transcript)


def test_the_default_turn_limit_lets_every_left_out_detail_be_asked_for_and_stops_a_model_that_never_acts(cases):
    two_missing = next(case for case in cases if len(case.missing) == 2)
    [outcome] = play_chats([two_missing], FakeBackend(cases, _acts_after(lambda c: len(c.missing))))
    assert outcome.success and outcome.ended == "acted"
    [outcome] = play_chats([cases[0]], FakeBackend(cases, lambda chat, case: ASK_AMOUNT))
    assert (outcome.assistant_turns, outcome.ended) == (4, "max_turns")


def test_a_reply_that_neither_asks_nor_acts_costs_a_turn_and_the_user_says_go_ahead(cases):
    [outcome] = play_chats([cases[0]], FakeBackend(cases, lambda chat, case: "lorem ipsum"), max_turns=2)
    assert outcome.transcript[3] == {"role": "user", "content": GO_AHEAD}
    assert outcome.questions == 0  # "lorem ipsum" asked for nothing
    assert (outcome.user_turns, outcome.assistant_turns, outcome.ended) == (2, 2, "max_turns")
    broken = FakeBackend(cases, lambda chat, case: '{"thought": "pay", "action": ')
    [outcome] = play_chats([cases[0]], broken, max_turns=2)
    assert outcome.ended == "parse_error" and not outcome.success


def test_one_generate_call_per_round_with_every_open_chat(cases):
    three = cases[:3]
    rule = _acts_after(lambda case: three.index(case))  # case i asks i questions, acts, then confirms
    backend = FakeBackend(cases, rule)
    outcomes = play_chats(three, backend)
    assert backend.batch_sizes == [3, 3, 2, 1]
    assert [o.case_id for o in outcomes] == [c.case_id for c in three]
    assert [o.user_turns for o in outcomes] == [1, 2, 3]
    narrow = FakeBackend(cases, rule)
    assert [o.user_turns for o in play_chats(three, narrow, batch_size=2)] == [1, 2, 3]
    assert narrow.batch_sizes == [2, 2, 2, 1, 1, 1]  # a finished chat's slot goes to the next case at once


def test_chat_cases_are_deterministic_distinct_and_held_out(cases):
    again = chat_cases(12)
    assert [(c.case_id, c.opening, c.goal) for c in again] == [(c.case_id, c.opening, c.goal) for c in cases[:12]]
    openings = [c.opening for c in cases]
    assert len(set(openings)) == len(openings)
    assert any(c.missing for c in cases) and any(not c.missing for c in cases)
    training = {built.record["messages"][1]["content"] for built in build_conversations(50, seed=0)}
    assert not training & set(openings)


class _ForbiddenGoal:
    def __getattr__(self, name):
        raise AssertionError(f"the scripted assistant read the goal ({name})")


def test_scripted_assistant_succeeds_from_the_chat_alone(cases):
    # It is built from cases with the goal unreadable and the answer-bearing parts of the task removed;
    # the simulated user still plays the real goals.
    blinded = [dataclasses.replace(case, goal=_ForbiddenGoal(), task=case.task.model_copy(
        update={"checks": [NoOtherChanges()], "slots": {}, "scenario": "chat"})) for case in cases]
    outcomes = play_chats(cases, ScriptedChatAssistant.for_cases(blinded))
    summary = summarize_chats(outcomes)
    print(f"\nscripted assistant on {summary['cases']} held-out chats: {summary['success_rate']}% success, "
          f"{summary['avg_turns_to_success']} user turns to success; {summary}")
    assert summary["success_rate"] >= 90
    for case, outcome in zip(cases, outcomes):
        # It cannot know what it was not told: every left-out detail costs a question.
        assert outcome.user_turns >= 1 + len(case.missing)


def test_understanding_reads_intent_person_amount_and_note():
    contacts = [Contact(contact_id=1, first_name="Bob", last_name="Ray", email="bob.ray@example.com",
                        phone_number="415-555-0101", nickname="Bobby"),
                Contact(contact_id=2, first_name="Cy", last_name="Fox", email="cy.fox@example.com",
                        phone_number="212-555-0199")]

    def read(*messages):
        roles = ["user", "assistant"] * len(messages)
        belief = understand([{"role": r, "content": m} for r, m in zip(roles, messages)], contacts)
        who = belief.contact.first_name if belief.contact else None
        return belief.intent, who, belief.recipient_text, belief.amount, belief.note

    assert read("I owe Bob $12.50 for lunch, pay them back") == ("send_money", "Bob", "Bob", 12.5, "lunch")
    assert read("please bill (415) 555-0101 forty-five bucks (the phone bill)") == (
        "request_money", "Bob", "(415) 555-0101", 45.0, "the phone bill")
    assert read("Send 20 dollars to BOBBY for the electric bill") == ("send_money", "Bob", "BOBBY", 20.0,
                                                                     "the electric bill")
    assert read("ask Cy for the money") == ("request_money", "Cy", "Cy", None, None)
    assert read("send a request for a tenner", "Who should I request $10 from?", "From Cy Fox.",
                "What is it for? I'll add that as the note.", "Movie night.") == (
        "request_money", "Cy", "Cy Fox", 10.0, "Movie night")


def _outcome(case_id, success, user_turns, missing=(), ended="acted"):
    return ChatOutcome(case_id, success, user_turns, user_turns + 1, ended, missing,
                       [{"role": "user", "content": f"hi from {case_id}"}])


HAND_MADE = [_outcome("a", True, 1), _outcome("b", True, 2, ("amount",)), _outcome("c", False, 3, ("note",)),
             _outcome("d", True, 3, ("amount", "note")), _outcome("e", False, 6, (), "max_turns")]


def test_summary_numbers():
    summary = summarize_chats(HAND_MADE)
    assert summary["cases"] == 5 and summary["success_rate"] == 60.0
    assert summary["avg_turns_to_success"] == 2.0  # (1 + 2 + 3) / 3
    assert summary["avg_turns"] == 3.0  # (1 + 2 + 3 + 3 + 6) / 5
    assert (summary["ended_acted"], summary["ended_max_turns"]) == (4, 1)
    assert (summary["cases_missing0"], summary["success_rate_missing0"], summary["avg_turns_to_success_missing0"]) == (
        2, 50.0, 1.0)
    assert (summary["cases_missing1"], summary["success_rate_missing1"], summary["avg_turns_to_success_missing1"]) == (
        2, 50.0, 2.0)
    assert (summary["success_rate_missing2"], summary["avg_turns_to_success_missing2"]) == (100.0, 3.0)
    assert summarize_chats([])["success_rate"] is None


def test_the_summary_counts_chats_that_asked_for_a_detail():
    asked = [dataclasses.replace(o, questions=q) for o, q in zip(HAND_MADE, (1, 1, 0, 2, 0))]
    summary = summarize_chats(asked)
    assert summary["asked_rate_missing"] == round(100 * 2 / 3, 1)  # b and d of b, c, d
    assert summary["asked_rate_complete"] == 50.0  # a of a, e
    assert summarize_chats(HAND_MADE[:1])["asked_rate_missing"] is None


def test_the_summary_splits_success_by_what_the_user_wants(cases):
    intents = [dataclasses.replace(o, intent=i) for o, i in zip(
        HAND_MADE, ("send_money", "request_money", "send_money", "request_money", "send_money"))]
    summary = summarize_chats(intents)
    assert (summary["cases_send_money"], summary["success_rate_send_money"]) == (3, round(100 / 3, 1))  # a of a, c, e
    assert (summary["cases_request_money"], summary["success_rate_request_money"]) == (2, 100.0)
    assert "success_rate_send_money" not in summarize_chats(HAND_MADE)  # outcomes that do not say
    played = play_chats(cases, ScriptedChatAssistant.for_cases(cases))
    assert [o.intent for o in played] == [c.goal.intent for c in cases]


def test_saved_files(tmp_path):
    paths = save_chat_evaluation(HAND_MADE, "org/model", tmp_path, {"seed": 1000})
    assert paths["outcomes"].name == "org_model_chat_outcomes.csv"
    rows = list(csv.DictReader(paths["outcomes"].open()))
    assert [r["case_id"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert rows[0]["intent"] == ""  # the hand-made outcomes do not say
    assert json.loads(rows[1]["transcript"]) == HAND_MADE[1].transcript and rows[3]["missing"] == "amount;note"
    [summary] = list(csv.DictReader(paths["summary"].open()))
    assert summary["model"] == "org/model" and float(summary["success_rate"]) == 60.0
    metadata = json.loads(paths["metadata"].read_text())
    assert metadata["seed"] == 1000 and metadata["summary"]["cases"] == 5


def test_a_question_lists_what_was_given_and_the_user_reads_only_the_question():
    from helpers.agent.chat_protocol import chat_question
    from helpers.agent.simulated_user import SimulatedUser, UserGoal

    goal = UserGoal("send_money", "Ann Lee", "Ann", 20.0, "lunch")
    asking = chat_question("note", goal.intent, {"recipient_text": "Ann", "amount": 20.0})
    assert json.loads(asking)["thought"] == "Person: Ann. Amount: $20. Note: not given. I ask for the note."
    user = SimulatedUser(goal, random.Random(0))
    assert user.asked_for(asking) == "note" and "lunch" in user.answer(asking).lower()
    # "Amount" in the thought is the assistant's own note, not a question to the user
    amount_known = chat_question("recipient", goal.intent, {"amount": 20.0, "note": "lunch"})
    assert user.asked_for(amount_known) == "recipient"
