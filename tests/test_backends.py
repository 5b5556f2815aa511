"""Backends end to end: an OpenAI-compatible endpoint (a local stub), resumable evaluation, batching (vLLM: test_vllm_backend.py)."""
import json
import re
from collections import Counter

import pytest

from helpers.agent.backends import OpenAIBackend
from helpers.agent.expert import ExpertPolicy
from helpers.agent.llm_client import ChatClient, EndpointConfig, LLMClientError
from helpers.agent.policy import ModelPolicy
from helpers.agent.prompts import PromptFormat, format_completion
from helpers.harness.episode import MAX_UNREADABLE_REPLIES, Step, run_episodes
from helpers.harness.evaluate import evaluate, run_key
from helpers.tasks import build_split
from tests.openai_stub import STUB_MODEL, OpenAIStub, scripted

# The full history in every prompt: the stub rebuilds the expert's state from it.
FULL_HISTORY = PromptFormat(style="seed", history_observation_chars=100_000, latest_observation_chars=100_000)
SEED_USER_MESSAGE = re.compile(r"User Instruction:\n```(?P<instruction>.*?)```\nThe following list.*?:\n"
                               r"```(?P<history>.*)```\n\nBased on User instruction", re.DOTALL)
MAX_CONCURRENCY = 3


@pytest.fixture(scope="module")
def dev_tasks():
    return build_split("dev", 1)


def a_handful(tasks, count=6):
    """Tasks of different scenarios whose instructions tell them apart (the stub finds a task by it)."""
    chosen = tasks[::len(tasks) // count][:count]
    assert len({t.instruction for t in chosen}) == len(chosen)
    return chosen


def expert_behind_http(tasks):
    """A stub reply function that answers each prompt as the expert would, from the prompt alone."""
    by_instruction = {t.instruction: t for t in tasks}
    expert = ExpertPolicy()

    def reply(request) -> str:
        user = request.body["messages"][-1]["content"]
        match = SEED_USER_MESSAGE.match(user)
        history = [Step(s["thought"], s["action"], s["observation"]) for s in json.loads(match["history"])]
        action = expert.act(by_instruction[match["instruction"]], history)
        return format_completion(action.thought, action.code)

    return reply


def stub_client(stub: OpenAIStub) -> ChatClient:
    return ChatClient(EndpointConfig(model=STUB_MODEL, base_url=stub.url, max_retries=0,
                                     max_concurrency=MAX_CONCURRENCY))


def test_a_model_playing_the_expert_over_http_solves_every_task(dev_tasks):
    tasks = a_handful(dev_tasks)
    # Latency keeps requests in flight long enough to overlap, so the concurrency bound is really exercised.
    with OpenAIStub(expert_behind_http(tasks), latency_s=0.05) as stub, stub_client(stub) as client:
        policy = ModelPolicy(OpenAIBackend(client), FULL_HISTORY)
        try:
            evaluation = evaluate(tasks, policy, "dev", batch_size=len(tasks), progress=False)
        except LLMClientError:
            pytest.fail(f"the stub could not play the expert: {stub.reply_errors[:1]}")
    assert evaluation.summary["tgc"] == 100.0 and evaluation.model == STUB_MODEL
    assert len(stub.chat_requests) == sum(r["steps"] for r in evaluation.records)
    assert 1 < stub.max_in_flight <= MAX_CONCURRENCY


def test_garbage_replies_cost_steps_until_three_in_a_row_end_the_episode(dev_tasks):
    tasks = a_handful(dev_tasks, count=2)
    garbage = "Sure! I will now pay the person you mentioned."
    with OpenAIStub(scripted(garbage)) as stub, stub_client(stub) as client:
        policy = ModelPolicy(OpenAIBackend(client), FULL_HISTORY)
        evaluation = evaluate(tasks, policy, "dev", max_steps=10, progress=False)
    assert len(stub.chat_requests) == MAX_UNREADABLE_REPLIES * len(tasks)  # not max_steps: a rambler stops early
    for episode in evaluation.episodes:
        assert not episode.result.success
        assert episode.error == f"{MAX_UNREADABLE_REPLIES} replies in a row held no usable action"
        assert [s.action for s in episode.steps] == [garbage] * MAX_UNREADABLE_REPLIES
        assert all(s.observation.startswith("Your reply could not be used") for s in episode.steps)
    assert evaluation.summary["tgc"] == 0.0


class Interrupted(Exception):
    """Stands for a crash or a Ctrl-C in the middle of an evaluation."""


class CountingExpert(ExpertPolicy):
    """The expert, counting the steps asked of each task; with `stop_after`, it stops the run once that many
    episodes are in the journal."""

    def __init__(self, journal=None, stop_after=None):
        self.journal, self.stop_after = journal, stop_after
        self.asked = Counter()
        self.batches: list[list[str]] = []

    def act_batch(self, tasks, histories):
        if self.stop_after is not None and len(self.journal.read_text().splitlines()) >= self.stop_after:
            raise Interrupted
        self.asked.update(t.id for t in tasks)
        self.batches.append([t.id for t in tasks])
        return super().act_batch(tasks, histories)


def test_an_interrupted_evaluation_resumes_without_rerunning_scored_tasks(dev_tasks, tmp_path):
    tasks = a_handful(dev_tasks)
    journal = tmp_path / "expert_dev.jsonl"
    journal.touch()
    with pytest.raises(Interrupted):
        evaluate(tasks, CountingExpert(journal, stop_after=2), "dev", batch_size=2, progress=False,
                 resume_from=journal)
    finished = {json.loads(line)["task_id"] for line in journal.read_text().splitlines()}
    assert 2 <= len(finished) < len(tasks)

    policy = CountingExpert()
    evaluation = evaluate(tasks, policy, "dev", batch_size=2, progress=False, resume_from=journal)
    assert set(policy.asked) == {t.id for t in tasks} - finished
    assert [r["task_id"] for r in evaluation.records] == [t.id for t in tasks]
    journaled = [json.loads(line)["task_id"] for line in journal.read_text().splitlines()]
    assert sorted(journaled) == sorted(t.id for t in tasks)
    assert len(evaluation.episodes) == len(tasks) - len(finished) and evaluation.summary["tgc"] == 100.0


def test_a_journal_from_another_model_is_set_aside_not_reused(dev_tasks, tmp_path):
    tasks = a_handful(dev_tasks)
    journal = tmp_path / "sft_dev.jsonl"
    evaluate(tasks, CountingExpert(), "dev", batch_size=2, progress=False, resume_from=journal,
             resume_key=run_key(model="sft", trained_at="monday"))
    same = CountingExpert()
    evaluate(tasks, same, "dev", batch_size=2, progress=False, resume_from=journal,
             resume_key=run_key(model="sft", trained_at="monday"))
    assert not same.asked

    retrained = CountingExpert()
    evaluation = evaluate(tasks, retrained, "dev", batch_size=2, progress=False, resume_from=journal,
                          resume_key=run_key(model="sft", trained_at="tuesday"))
    assert set(retrained.asked) == {t.id for t in tasks} and len(evaluation.episodes) == len(tasks)
    stale = tmp_path / "sft_dev.stale.jsonl"
    assert len(stale.read_text().splitlines()) == len(tasks) == len(journal.read_text().splitlines())


def test_run_episodes_batches_at_most_batch_size_and_keeps_task_order(dev_tasks):
    by_scenario = {t.scenario: t for t in reversed(dev_tasks)}
    # Three six-step tasks, then a four-step one: the fourth finishes first.
    order = ["send_by_name", "send_with_note", "deny_request", "answer_balance", "request_money",
             "add_balance", "send_by_phone", "pay_back_largest", "fail_unknown_person"]
    tasks = [by_scenario[name] for name in order]
    policy = CountingExpert()
    finished: list[str] = []
    episodes = run_episodes(tasks, policy, batch_size=4, on_done=lambda e: finished.append(e.task.id))
    assert max(len(batch) for batch in policy.batches) == 4
    assert all(len(set(batch)) == len(batch) for batch in policy.batches)
    assert [e.task.id for e in episodes] == [t.id for t in tasks]
    assert finished != [t.id for t in tasks] and sorted(finished) == sorted(t.id for t in tasks)
    assert all(e.result.success for e in episodes)
