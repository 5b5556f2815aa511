"""VLLMEngine and VLLMBackend against a stand-in vLLM whose classes take exactly the recorded vLLM 0.30.0 keywords.

vLLM needs a CUDA GPU, so the stand-in records what the engine is asked to do: one engine per model, the
LoRA adapters it serves, and the shutdown that returns its memory before the next model starts.
"""
import json
import sys
import types
from pathlib import Path

import pytest

from helpers.agent.backends import VLLMBackend, VLLMEngine

VLLM = json.loads((Path(__file__).parent / "fixtures" / "gpu_api" / "signatures.json").read_text())["vllm"]
LLM_KEYWORDS = (set(VLLM["LLM.__init__"]["parameters"]) | set(VLLM["EngineArgs"]["fields"])) - {"self"}
SAMPLING_FIELDS = set(VLLM["SamplingParams"]["fields"])
LORA_FIELDS = VLLM["LoRARequest"]["fields"]


def keyword_checked(name, accepted):
    def check(kwargs):
        unknown = set(kwargs) - accepted
        assert not unknown, f"vLLM 0.30.0's {name} does not take {sorted(unknown)}"
    return check


@pytest.fixture
def fake_vllm(monkeypatch):
    events = []

    class LLM:
        def __init__(self, model, **kwargs):
            keyword_checked("LLM", LLM_KEYWORDS)(kwargs)
            self.model, self.kwargs = model, kwargs
            core = types.SimpleNamespace(shutdown=lambda: events.append(("shutdown", model)))
            self.llm_engine = types.SimpleNamespace(engine_core=core)
            events.append(("start", model, kwargs))

        def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None):
            events.append(("chat", self.model, lora_request.lora_name if lora_request else None))
            adapter = f" via {lora_request.lora_name}" if lora_request else ""
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
                text=f"{self.model}{adapter}: {m[-1]['content']} ({sampling_params.max_tokens})")]) for m in messages]

    class SamplingParams:
        def __init__(self, **kwargs):
            keyword_checked("SamplingParams", SAMPLING_FIELDS)(kwargs)
            self.__dict__.update(kwargs)

    class LoRARequest:
        def __init__(self, **kwargs):
            keyword_checked("LoRARequest", set(LORA_FIELDS))(kwargs)
            assert kwargs["lora_int_id"] >= 1  # vLLM refuses 0
            self.__dict__.update(kwargs)

    modules = {
        "vllm": types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams),
        "vllm.lora": types.SimpleNamespace(),
        "vllm.lora.request": types.SimpleNamespace(LoRARequest=LoRARequest),
        "vllm.distributed": types.SimpleNamespace(),
        "vllm.distributed.parallel_state": types.SimpleNamespace(
            cleanup_dist_env_and_memory=lambda: events.append(("cleanup",))),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return events


CHATS = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]


def test_an_engine_generates_greedily_and_takes_the_profile_sizes(fake_vllm):
    with VLLMEngine("models/sft", dtype="float16", max_model_len=2048, tensor_parallel_size=2, seed=3) as engine:
        replies = VLLMBackend(engine, "sft", max_new_tokens=64).generate(CHATS)
    assert replies == ["models/sft: a (64)", "models/sft: b (64)"]
    start = fake_vllm[0]
    assert start[2]["tensor_parallel_size"] == 2 and start[2]["dtype"] == "float16"
    assert "enable_lora" not in start[2]  # LoRA support costs memory: only when adapters are served


def test_every_model_gets_its_engine_and_each_is_shut_down_before_the_next_starts(fake_vllm):
    for path in ("models/sft_full", "models/lora_merged", "models/grpo"):
        with VLLMEngine(path) as engine:
            VLLMBackend(engine, path).generate(CHATS)
    order = [(e[0], e[1]) if len(e) > 1 else e for e in fake_vllm if e[0] != "chat"]
    assert order == [("start", "models/sft_full"), ("shutdown", "models/sft_full"), ("cleanup",),
                     ("start", "models/lora_merged"), ("shutdown", "models/lora_merged"), ("cleanup",),
                     ("start", "models/grpo"), ("shutdown", "models/grpo"), ("cleanup",)]


def test_one_engine_serves_several_lora_adapters_of_its_base(fake_vllm):
    with VLLMEngine("Qwen/Qwen2.5-7B-Instruct", max_lora_rank=16) as engine:
        base = VLLMBackend(engine, "base")
        first = VLLMBackend(engine, "lora", adapter_path="models/lora_adapter")
        second = VLLMBackend(engine, "grpo", adapter_path="models/grpo_adapter")
        replies = [backend.generate(CHATS[:1])[0] for backend in (base, first, second)]
        assert [first.lora_request.lora_int_id, second.lora_request.lora_int_id] == [1, 2]
    assert replies == ["Qwen/Qwen2.5-7B-Instruct: a (256)", "Qwen/Qwen2.5-7B-Instruct via lora: a (256)",
                       "Qwen/Qwen2.5-7B-Instruct via grpo: a (256)"]
    assert fake_vllm[0][2]["enable_lora"] is True and fake_vllm[0][2]["max_lora_rank"] == 16
    assert sum(1 for e in fake_vllm if e[0] == "start") == 1


def test_shutting_down_twice_is_harmless(fake_vllm):
    engine = VLLMEngine("models/sft")
    engine.shutdown()
    engine.shutdown()
    assert [e[0] for e in fake_vllm] == ["start", "shutdown", "cleanup"]


def test_without_vllm_the_engine_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what a machine without vLLM (every CPU profile) sees
    with pytest.raises(ImportError):
        VLLMEngine("models/any")
