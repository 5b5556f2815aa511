"""Backends end to end: an OpenAI-compatible endpoint (a local stub), resumable evaluation, batching, vLLM's API."""
import ast
import inspect
import json
import re
import sys
import types
from collections import Counter

import pytest

from helpers import backends
from helpers.agent import ModelPolicy
from helpers.backends import OpenAIBackend, VLLMBackend
from helpers.episode import Step, run_episodes
from helpers.evaluation import evaluate, run_key
from helpers.expert import ExpertPolicy
from helpers.llm_client import ChatClient, EndpointConfig, LLMClientError
from helpers.prompts import PromptFormat, format_completion
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


def test_garbage_replies_cost_steps_until_max_steps(dev_tasks):
    tasks = a_handful(dev_tasks, count=2)
    garbage = "Sure! I will now pay the person you mentioned."
    with OpenAIStub(scripted(garbage)) as stub, stub_client(stub) as client:
        policy = ModelPolicy(OpenAIBackend(client), FULL_HISTORY)
        evaluation = evaluate(tasks, policy, "dev", max_steps=3, progress=False)
    assert len(stub.chat_requests) == 3 * len(tasks)
    for episode in evaluation.episodes:
        assert not episode.result.success and episode.error == "no complete_task within 3 steps"
        assert [s.action for s in episode.steps] == [garbage] * 3
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


# The names vLLM documents for what VLLMBackend calls (checked against the vLLM docs and source, v0.8-v0.9:
# https://docs.vllm.ai/en/v0.8.3/api/offline_inference/llm.html, vllm/entrypoints/llm.py, vllm/sampling_params.py).
# LLM(model, *, tokenizer, ..., tensor_parallel_size, dtype, quantization, seed, gpu_memory_utilization, ...,
# **kwargs for EngineArgs, which include max_model_len, max_num_seqs and enable_prefix_caching).
LLM_POSITIONAL = ["model"]
LLM_KEYWORDS = {
    "model", "tokenizer", "tokenizer_mode", "trust_remote_code", "tensor_parallel_size", "dtype", "quantization",
    "revision", "tokenizer_revision", "seed", "gpu_memory_utilization", "swap_space", "cpu_offload_gb",
    "enforce_eager", "max_model_len", "max_num_seqs", "enable_prefix_caching", "enable_lora", "max_lora_rank",
}
# SamplingParams is keyword-only (a msgspec.Struct): n, temperature, top_p, top_k, min_p, seed, stop, max_tokens...
SAMPLING_KEYWORDS = {
    "n", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "max_tokens", "min_tokens",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "ignore_eos", "logprobs", "skip_special_tokens",
}
# LLM.chat(messages, sampling_params=None, use_tqdm=True, lora_request=None, chat_template=None, ...)
CHAT_POSITIONAL = ["messages", "sampling_params", "use_tqdm", "lora_request", "chat_template"]
CHAT_KEYWORDS = set(CHAT_POSITIONAL) | {"chat_template_content_format", "add_generation_prompt",
                                        "continue_final_message", "tools", "chat_template_kwargs"}


def vllm_calls() -> dict[str, list[str]]:
    """The parameter names VLLMBackend passes to LLM(...), SamplingParams(...) and .chat(...), read from its source."""
    tree = ast.parse(inspect.getsource(backends))
    backend = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VLLMBackend")
    positional = {"LLM": LLM_POSITIONAL, "SamplingParams": [], "chat": CHAT_POSITIONAL}
    found: dict[str, list[str]] = {}
    for node in ast.walk(backend):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name in positional:
            assert len(node.args) <= len(positional[name]), f"{name} takes at most {len(positional[name])} positional"
            found[name] = positional[name][:len(node.args)] + [k.arg for k in node.keywords]
    return found


def test_vllm_backend_passes_only_documented_parameters():
    calls = vllm_calls()
    assert set(calls) == {"LLM", "SamplingParams", "chat"}
    assert "model" in calls["LLM"] and set(calls["LLM"]) <= LLM_KEYWORDS, calls["LLM"]
    assert {"temperature", "max_tokens"} <= set(calls["SamplingParams"]) <= SAMPLING_KEYWORDS, calls["SamplingParams"]
    assert calls["chat"][:2] == ["messages", "sampling_params"] and set(calls["chat"]) <= CHAT_KEYWORDS


def test_vllm_backend_without_vllm_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what a machine without vLLM (every CPU profile) sees
    with pytest.raises(ImportError):
        VLLMBackend("models/any", "any")


def test_vllm_backend_generates_through_a_fake_vllm_with_the_documented_signatures(monkeypatch):
    made = {}

    class LLM:
        def __init__(self, model, *, tensor_parallel_size=1, gpu_memory_utilization=0.9, max_model_len=None,
                     seed=None):
            made["llm"] = dict(model=model, tensor_parallel_size=tensor_parallel_size, seed=seed,
                               gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            made["chat"] = dict(sampling_params=sampling_params, use_tqdm=use_tqdm)
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"reply to {m[-1]['content']}")])
                    for m in messages]

    class SamplingParams:
        def __init__(self, *, temperature=1.0, max_tokens=16):
            self.temperature, self.max_tokens = temperature, max_tokens

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    backend = VLLMBackend("models/sft", "sft", max_new_tokens=64, max_model_len=2048)
    replies = backend.generate([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])
    assert replies == ["reply to a", "reply to b"]
    assert made["llm"]["model"] == "models/sft" and made["llm"]["max_model_len"] == 2048
    sampling = made["chat"]["sampling_params"]
    assert (sampling.temperature, sampling.max_tokens) == (0.0, 64) and made["chat"]["use_tqdm"] is False
