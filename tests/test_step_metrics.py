"""The step metric with partial credit: exact 1, equivalent by execution (or by the judge) 0.5, else 0."""
import ast

import pandas as pd
import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.agent.llm_client import ChatClient, EndpointConfig
from helpers.agent.prompts import PromptFormat, build_prompt, format_completion, instruction_of, parse_action
from helpers.data.stepwise import stepwise_records
from helpers.evaluation.step_metrics import (StepJudge, action_matches, copied_values, judge_says_yes, match_by_kind,
                                             step_scores)
from helpers.harness.episode import run_episode
from helpers.tasks import build_split
from tests.openai_stub import STUB_MODEL, OpenAIStub

SCENARIOS = ("send_by_name", "answer_balance")


@pytest.fixture(scope="module")
def dev():
    """Two dev tasks (a payment, a question), keyed by id, and the step records of their expert episodes."""
    tasks = build_split("dev", 1)
    chosen = [next(t for t in tasks if t.scenario == scenario) for scenario in SCENARIOS]
    records = list(stepwise_records([run_episode(t, ExpertPolicy()) for t in chosen], "dev"))
    return {t.id: t for t in chosen}, records


def expert_code(record: dict) -> str:
    return parse_action(record["completion"][0]["content"]).code


def reply(code: str) -> str:
    return format_completion("my next step", code)


def find_record(records: list[dict], scenario: str, code_contains: str) -> dict:
    return next(r for r in records if r["scenario"] == scenario and code_contains in expert_code(r))


def rewrite_call(code: str, api_name: str, change) -> str:
    """The code with `change` applied to every call of `api_name` (an ast.Call node, changed in place)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == api_name:
            change(node)
    return ast.unparse(tree)


def reorder_keywords(call: ast.Call) -> None:
    call.keywords.reverse()


def add_a_dollar(call: ast.Call) -> None:
    for keyword in call.keywords:
        if keyword.arg == "amount":
            keyword.value = ast.Constant(keyword.value.value + 1)


def test_the_experts_own_completions_score_one(dev):
    tasks, records = dev
    replies = [r["completion"][0]["content"] for r in records]
    scores = step_scores(records, replies, tasks)
    assert list(scores.columns) == list(action_matches(records, replies).columns) + ["score", "reason"]
    assert len(scores) == len(records) and (scores["score"] == 1.0).all()
    assert set(scores["reason"]) == {"exact match"}


def test_instruction_is_read_back_from_either_prompt_template(dev):
    tasks, records = dev
    for record in records:
        assert instruction_of(record["prompt"]) == tasks[record["task_id"]].instruction
        compact = build_prompt(tasks[record["task_id"]].instruction, [], PromptFormat("compact"))
        assert instruction_of(compact) == tasks[record["task_id"]].instruction


def test_copied_values_are_the_names_amounts_and_digits_the_instruction_states():
    instruction = "Send $24.50 to Bo Li from my wallet, card ending 4100."
    assert copied_values('apis.phone.search_contacts(access_token=t, query="Bo Li")', instruction) == ["Bo Li"]
    assert copied_values("apis.wallet.send_money(receiver_email=r['email'], amount=24.5)", instruction) == ["24.5"]
    assert copied_values('[c for c in cards if c["card_number"].endswith("4100")][0]', instruction) == ["4100"]
    # vocabulary, list indices and values the instruction does not state are not copies
    assert copied_values('print(apis.api_docs.show_api_doc(app_name="wallet", api_name="send_money"))', instruction) == []
    assert copied_values("recipient = contacts[2]\nprint(recipient['email'])", "Pay $2 to Al Wu.") == []
    assert copied_values("apis.wallet.send_money(amount=25)", instruction) == []
    assert copied_values("this is not python (", instruction) == []


def test_dev_steps_are_scored_by_kind(dev):
    _, records = dev
    replies = [r["completion"][0]["content"] for r in records]
    scores = action_matches(records, replies)
    copying = {expert_code(r).split("(")[0] for r, copies in zip(records, scores["copies"]) if copies}
    assert copying == {"contacts = apis.phone.search_contacts", "print"}  # the look-up and send_money(amount=...)
    assert all("send_money(" in expert_code(r) for r, c in zip(records, scores["copies"])
               if c and expert_code(r).startswith("print"))
    # every step once right (the expert's reply) and once wrong: 50% of each kind
    table = match_by_kind(pd.concat([scores, action_matches(records, [reply("print(1)")] * len(records))]))
    assert table.loc["copies a value from the instruction", "steps"] == 2 * scores["copies"].sum() > 0
    assert table.loc["no value to copy", "steps"] == 2 * (~scores["copies"]).sum() > 0
    assert list(table["match_pct"]) == [50.0, 50.0]


def test_equivalent_actions_score_half_even_without_the_earlier_records(dev):
    # Only later steps are given: the earlier ones are recovered by running the expert on the task.
    tasks, records = dev
    send = find_record(records, "send_by_name", "send_money(")
    first = find_record(records, "send_by_name", "show_api_doc(")
    finish = find_record(records, "send_by_name", "complete_task(")
    answer = find_record(records, "answer_balance", "complete_task(")
    cases = [
        (send, rewrite_call(expert_code(send), "send_money", reorder_keywords)),
        (send, expert_code(send).replace("(", "( ", 1)),
        (first, expert_code(first) + "\nx = 1"),
        (finish, 'apis.supervisor.complete_task(status="success")'),
        (answer, "apis.supervisor.complete_task(answer=f'${balance}')"),
        # the documented blind spot: a wrong read-only action changes the world as little as the right one
        (first, 'print(apis.api_docs.show_api_doc(app_name="wallet", api_name="show_balance"))'),
    ]
    for record, code in cases:
        assert code != expert_code(record)
    scores = step_scores([r for r, _ in cases], [reply(code) for _, code in cases], tasks)
    assert not scores["match"].any()
    assert list(scores["score"]) == [0.5] * len(cases), scores["reason"].tolist()
    assert all(reason.startswith("equivalent") for reason in scores["reason"])


def test_wrong_failing_and_unparseable_actions_score_zero(dev):
    tasks, records = dev
    send = find_record(records, "send_by_name", "send_money(")
    first = find_record(records, "send_by_name", "show_api_doc(")
    answer = find_record(records, "answer_balance", "complete_task(")
    cases = [
        (send, reply(rewrite_call(expert_code(send), "send_money", add_a_dollar)), "different world changes"),
        (send, reply('print(apis.wallet.send_money(access_token=wallet_token, receiver_email="no.one@nowhere.example", '
                     'amount=5))'), "execution error"),
        (send, reply("print(undefined_name)"), "execution error: NameError"),
        (first, reply("apis.supervisor.complete_task()"), "different completion"),
        (answer, reply("apis.supervisor.complete_task(answer=balance + 1)"), "different completion"),
        (send, "I would send the money now.", "unparseable reply"),
    ]
    # All the records are given, so the earlier steps come from them.
    scores = step_scores(records + [r for r, _, _ in cases],
                         [r["completion"][0]["content"] for r in records] + [text for _, text, _ in cases], tasks)
    scored = scores.iloc[len(records):]
    assert list(scored["score"]) == [0.0] * len(cases), scored["reason"].tolist()
    for reason, (_, _, expected) in zip(scored["reason"], cases):
        assert reason.startswith(expected), reason
    assert list(scored["parsed"]) == [True] * (len(cases) - 1) + [False]


def test_records_that_do_not_follow_the_expert_are_refused(dev):
    tasks, records = dev
    later = [r for r in records if r["scenario"] == "send_by_name" and r["step"] >= 2]
    altered = {**later[0], "completion": [{"role": "assistant", "content": reply("print('something else')")}]}
    with pytest.raises(ValueError, match="differs from the expert's"):
        step_scores([altered], [reply("print(1)")], tasks)
    with pytest.raises(ValueError, match="No task"):
        step_scores(later[:1], [reply("print(1)")], {})
    with pytest.raises(ValueError, match="one reply per record"):
        step_scores(later, [], tasks)


def test_the_judge_lifts_only_what_it_calls_reasonable_and_sees_only_differing_actions(dev):
    tasks, records = dev
    send = find_record(records, "send_by_name", "send_money(")
    exact = expert_code(send)
    reordered = rewrite_call(exact, "send_money", reorder_keywords)
    generous = rewrite_call(exact, "send_money", add_a_dollar)
    failing = "print(undefined_name)"
    asked: list[str] = []

    def verdict(request) -> str:
        agent_action = request.body["messages"][-1]["content"].split("The agent's next action:")[1]
        asked.append(agent_action)
        return "Yes." if generous in agent_action else "**NO**"

    replies = [reply(exact), reply(reordered), reply(generous), reply(failing), "no JSON here"]
    with OpenAIStub(verdict) as stub, ChatClient(EndpointConfig(model=STUB_MODEL, base_url=stub.url,
                                                                max_retries=0)) as client:
        judge = StepJudge(client)
        scores = step_scores([send] * len(replies), replies, tasks, judge=judge)
        assert len(stub.chat_requests) == 2
        assert judge.reasonable([]) == [] and len(stub.chat_requests) == 2
    assert list(scores["score"]) == [1.0, 0.5, 0.5, 0.0, 0.0]
    reasons = list(scores["reason"])
    assert reasons[1].startswith("equivalent") and reasons[2].startswith("judge: a reasonable alternative")
    assert reasons[3].endswith("judge: not reasonable") and "judge" not in reasons[4]
    assert sorted(generous in a for a in asked) == [False, True] and any(failing in a for a in asked)
    assert not any(exact in a or reordered in a for a in asked)


@pytest.mark.parametrize("text, verdict", [
    ("YES", True), ("yes", True), ("Yes.", True), ("**YES**", True), ("Answer: YES", True), ("  yes, it is", True),
    ("NO", False), ("No.", False), ("", False), ("maybe", False), ("yesterday", False), ("I think YES", False),
])
def test_the_judges_verdict_is_its_first_word(text, verdict):
    assert judge_says_yes(text) is verdict
