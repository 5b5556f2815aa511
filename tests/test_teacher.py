"""The optional LLM teacher against a local OpenAI-compatible stub: paraphrases and verified trajectories."""
import json
import re

from helpers.agent.expert import ExpertPolicy
from helpers.agent.llm_client import ChatClient, EndpointConfig, describe_endpoint, endpoint_from_env
from helpers.agent.prompts import PromptFormat, format_completion
from helpers.data.teacher import must_keep, paraphrase_tasks, teacher_trajectories
from helpers.harness.episode import Step
from helpers.tasks import load_tasks
from tests.openai_stub import OpenAIStub
from tests.test_tasks import EXAMPLE

FULL_HISTORY = PromptFormat(history_observation_chars=100_000, latest_observation_chars=100_000)


def _example_tasks():
    (task,) = load_tasks(EXAMPLE)
    wrong = task.model_copy(update={"id": "bad0001_1", "scenario_id": "bad0001",
                                    "instruction": "Send $25 to Bob Ray for lunch, please."})
    return task, wrong


def expert_behind_the_endpoint(tasks_by_instruction, sabotage: set[str]):
    """A stub model that answers agent prompts with the expert's step; sabotaged tasks get a wrong amount."""
    def reply(request):
        user = request.body["messages"][-1]["content"]
        instruction = re.search(r"User Instruction:\n```(.*?)```", user, re.S).group(1)
        history = json.loads(re.search(r"observation:\n```(.*?)```\n\nBased on", user, re.S).group(1))
        task = tasks_by_instruction[instruction]
        steps = [Step(h["thought"], h["action"], h["observation"]) for h in history]
        action = ExpertPolicy().act(task, steps)
        code = action.code.replace("amount=25", "amount=52") if instruction in sabotage else action.code
        return format_completion(action.thought, code)
    return reply


def test_teacher_trajectories_are_kept_only_when_they_verify_and_are_cached(tmp_path):
    good, bad = _example_tasks()
    reply = expert_behind_the_endpoint({good.instruction: good, bad.instruction: bad}, sabotage={bad.instruction})
    with OpenAIStub(reply) as stub:
        config = EndpointConfig(model="stub-model", base_url=stub.url, api_key="k", cache_dir=tmp_path, max_concurrency=2)
        with ChatClient(config) as client:
            result = teacher_trajectories(client, [good, bad], prompt_format=FULL_HISTORY, progress=False)
        assert result.attempted == 2
        assert [e.task.id for e in result.episodes] == [good.id]
        sent = len(stub.chat_requests)
        with ChatClient(config) as client:  # a rerun is answered from the cache
            again = teacher_trajectories(client, [good, bad], prompt_format=FULL_HISTORY, progress=False)
            assert client.stats.requests == 0 and client.stats.cache_hits == sent
        assert len(stub.chat_requests) == sent
        assert [s.action for s in again.episodes[0].steps] == [s.action for s in result.episodes[0].steps]


def test_paraphrases_must_keep_every_detail(tmp_path):
    good, _ = _example_tasks()
    replies = iter(["Could you pay Bob Ray $25 for lunch?", "Pay Bob twenty-five for lunch."])
    with OpenAIStub(lambda request: next(replies)) as stub:
        config = EndpointConfig(model="stub-model", base_url=stub.url, api_key="k", max_concurrency=1)
        with ChatClient(config) as client:
            result = paraphrase_tasks(client, [good], per_task=2, progress=False)
    assert must_keep(good) == ["Bob Ray", "$25", "lunch"]
    assert [t.instruction for t in result.tasks] == ["Could you pay Bob Ray $25 for lunch?"]
    assert result.rejected == 1
    (kept,) = result.tasks
    assert kept.id == "a1b2c3d-p1_1" and kept.world == good.world and kept.checks == good.checks


def test_without_a_key_the_offline_generator_is_announced(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert endpoint_from_env() is None
    assert "offline" in describe_endpoint(None)
