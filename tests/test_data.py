"""Training data builders: every record verified, nothing from the test splits, exports well formed."""
import json

import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.agent.prompts import parse_action
from helpers.data.conversations import build_conversations
from helpers.data.export import conversation_to_openai, count_chat_tokens, stepwise_to_openai, token_report
from helpers.data.preferences import preference_pairs, why_rejected
from helpers.data.stepwise import UnverifiedStep, stepwise_records
from helpers.harness.episode import Environment, Step, run_episode
from helpers.harness.evaluate import evaluate
from helpers.tasks import SPLITS, build_split


@pytest.fixture(scope="module")
def splits():
    return {split: build_split(split, 1) for split in SPLITS}


@pytest.fixture(scope="module")
def train_episodes(splits):
    return evaluate(splits["train"], ExpertPolicy(), "train", progress=False).episodes


@pytest.fixture(scope="module")
def stepwise(train_episodes):
    return list(stepwise_records(train_episodes, "train"))


@pytest.fixture(scope="module")
def pairs(train_episodes):
    return list(preference_pairs(train_episodes, seed=0))


@pytest.fixture(scope="module")
def conversations():
    return list(build_conversations(12, seed=0, missing_rate=0.5))


def test_stepwise_records_follow_the_seed_format_and_replay(stepwise, train_episodes):
    assert len(stepwise) == sum(len(e.steps) for e in train_episodes)
    for record in stepwise[:40]:
        system, user = record["prompt"]
        assert system["role"] == "system" and user["role"] == "user"
        assert user["content"].startswith("User Instruction:")
        history = json.loads(user["content"].split("observation:\n```")[1].split("```\n\nBased on")[0])
        assert len(history) == record["step"]
        action = parse_action(record["completion"][0]["content"])
        assert action.thought and action.code


def test_every_step_action_runs_without_error_in_its_own_state(stepwise, splits):
    tasks = {t.id: t for t in splits["train"]}
    by_task = {}
    for record in stepwise:
        by_task.setdefault(record["task_id"], []).append(parse_action(record["completion"][0]["content"]).code)
    for task_id, actions in list(by_task.items())[:8]:
        with Environment(tasks[task_id]) as env:
            for code in actions:
                assert env.execute(code).ok
            assert env.grade().success


def test_a_failed_trajectory_is_refused(splits):
    task = splits["train"][0]
    episode = run_episode(task, ExpertPolicy())
    # the observation does not say "failed": the step's result does, and that is what the filter reads
    broken = Step(episode.steps[1].thought, "print('ok')\napis.wallet.send_mony()", "ok\nAn error", ok=False,
                  error_kind="api_error")
    episode.steps[1] = broken
    with pytest.raises(UnverifiedStep, match="the action failed"):
        list(stepwise_records([episode], "train"))


def test_no_held_out_task_leaks_into_training_files(splits, stepwise, pairs, conversations):
    training_text = json.dumps(stepwise) + json.dumps(pairs) + json.dumps([c.record for c in conversations])
    for task in splits["test_normal"] + splits["test_challenge"]:
        assert task.id not in training_text
        assert task.instruction not in training_text


def test_rejected_steps_are_shown_wrong_and_chosen_steps_are_not(pairs, splits):
    tasks = {t.id: t for t in splits["train"]}
    assert {"invalid_json", "failing_code", "premature_completion", "wrong_amount"} <= {p["kind"] for p in pairs}
    checked = 0
    for pair in pairs:
        if pair["kind"] not in ("wrong_amount", "wrong_person", "skipped_login"):
            continue
        task = tasks[pair["task_id"]]
        prior = [s.action for s in run_episode(task, ExpertPolicy()).steps[:pair["step"]]]
        assert why_rejected(task, prior, pair["rejected"][0]["content"]) is not None
        assert why_rejected(task, prior, pair["chosen"][0]["content"]) is None
        checked += 1
    assert checked >= 5


def test_conversations_ask_for_what_is_missing_and_their_code_does_exactly_the_request(conversations):
    assert any(c.record["missing"] for c in conversations)
    for built in conversations:
        messages = built.record["messages"]
        assert [m["role"] for m in messages[:2]] == ["system", "user"]
        assert [m["role"] for m in messages[-3:]] == ["assistant", "tool", "assistant"]
        asked = [m for m in messages[2:-3] if m["role"] == "assistant"]
        assert len(asked) == len(built.record["missing"])
        code = parse_action(messages[-3]["content"]).code
        with Environment(built.task) as env:  # replayed in a fresh world, it passes the request's checks
            env.execute(code)
            assert env.grade().success


def test_openai_export_is_chat_format_with_tool_calls(stepwise, conversations):
    chat = stepwise_to_openai(stepwise[0])
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
    converted = conversation_to_openai(conversations[0].record)
    call = next(m for m in converted["messages"] if m.get("tool_calls"))
    code = json.loads(call["tool_calls"][0]["function"]["arguments"])["code"]
    assert "apis.wallet." in code
    answer = next(m for m in converted["messages"] if m["role"] == "tool")
    assert answer["tool_call_id"] == call["tool_calls"][0]["id"]
    report = token_report([chat, converted])
    assert report.tokens == count_chat_tokens(chat) + count_chat_tokens(converted) > 100
    assert report.cost("gpt-4o-mini-2024-07-18", epochs=1) == pytest.approx(report.tokens * 3.0 / 1e6)


def test_the_sft_chat_mix_takes_as_many_asking_chats_as_asked_each_kind_of_gap_in_turn(conversations, tmp_path):
    from helpers.data.files import write_jsonl
    from helpers.data.training_sets import pick_conversations, sft_datasets

    chats = [built.record for built in conversations]
    lacking = [c for c in chats if c["missing"]]
    assert 2 <= len(lacking) <= len(chats) - 2  # both kinds, so the mix has a choice
    assert pick_conversations(chats, 5) == chats[:5]  # no mix asked for: the first chats as generated
    picked = pick_conversations(chats, 6, asking=4)
    assert sum(bool(c["missing"]) for c in picked) == 4 and len(picked) == 6
    assert [c["conversation_id"] for c in picked] == [c["conversation_id"] for c in chats if c in picked]
    # one chat of each kind of gap before a second of any kind, each kind in generation order
    gaps = list(dict.fromkeys(tuple(c["missing"]) for c in lacking))
    in_turn = [c for turn in range(len(lacking)) for gap in gaps
               for c in [c for c in lacking if tuple(c["missing"]) == gap][turn:turn + 1]]
    assert [c for c in picked if c["missing"]] == [c for c in chats if c in in_turn[:4]]
    assert len({tuple(c["missing"]) for c in picked if c["missing"]}) == min(4, len(gaps))
    assert pick_conversations(chats, 3, asking=0) == [c for c in chats if not c["missing"]][:3]
    with pytest.raises(ValueError, match="between 0 and the number of chats"):
        pick_conversations(chats, 3, asking=4)
    with pytest.raises(ValueError, match="raise conversation_count"):
        pick_conversations(chats, len(chats), asking=len(lacking) + 1)

    write_jsonl(chats, tmp_path / "conversations_train.jsonl", generator="test", profile="test", seed=0)
    write_jsonl([{"messages": chats[0]["messages"]}], tmp_path / "episodes_train.jsonl", generator="test",
                profile="test", seed=0)
    write_jsonl([{"messages": chats[0]["messages"]}], tmp_path / "episodes_dev.jsonl", generator="test",
                profile="test", seed=0)
    assert pick_conversations(chats, 4, asking=3) != chats[:4]  # so the data below shows the mix was applied
    data = sft_datasets(tmp_path, "episode", conversations=4, asking=3)
    assert data["train"]["messages"][1:] == [c["messages"] for c in pick_conversations(chats, 4, asking=3)]
