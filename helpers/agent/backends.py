"""Text generation backends behind one interface: `generate(chats) -> replies`, one reply per chat.

- transformers: batched greedy generation on the CPU or a GPU (left padding);
- vLLM: the offline engine on a GPU, one engine per model, shut down before the next (not runnable on a CPU);
- any OpenAI-compatible endpoint (GPT-4o, `vllm serve`, Ollama) with bounded concurrency and retries.
"""
from __future__ import annotations

from typing import Protocol

from helpers.agent.generation import ChatGenerator, generate_replies
from helpers.agent.llm_client import ChatClient


class Backend(Protocol):
    name: str

    def generate(self, chats: list[list[dict]]) -> list[str]:
        """The model's reply to each chat, in order."""


class TransformersBackend:
    """Batched greedy generation on the CPU or a GPU; each conversation's cache is kept from one step to the next,
    and a reply stops once its JSON object is complete."""

    def __init__(self, model, tokenizer, name: str, max_new_tokens: int = 256, batch_size: int = 32,
                 reuse_cache: bool = True):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_new_tokens, self.batch_size, self.reuse_cache = max_new_tokens, batch_size, reuse_cache
        self.generator = ChatGenerator(model, tokenizer, max_new_tokens, batch_size)

    def generate(self, chats: list[list[dict]]) -> list[str]:
        if self.reuse_cache:
            return self.generator.generate(chats)
        return generate_replies(self.model, self.tokenizer, chats, self.max_new_tokens, self.batch_size)

    def with_max_new_tokens(self, max_new_tokens: int) -> "TransformersBackend":
        """The same model with another reply length (a chat's one action is longer than a step)."""
        return TransformersBackend(self.model, self.tokenizer, self.name, max_new_tokens, self.batch_size,
                                   self.reuse_cache)


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server; the client bounds concurrency and retries."""

    def __init__(self, client: ChatClient, name: str | None = None, max_tokens: int = 512, temperature: float = 0.0):
        self.client, self.max_tokens, self.temperature = client, max_tokens, temperature
        self.name = name or client.config.model

    def generate(self, chats: list[list[dict]]) -> list[str]:
        return self.client.complete_many(chats, progress=False, temperature=self.temperature,
                                         max_tokens=self.max_tokens)

    def with_max_new_tokens(self, max_new_tokens: int) -> "OpenAIBackend":
        return OpenAIBackend(self.client, self.name, max_new_tokens, self.temperature)


# vLLM takes this share of the card for weights and KV cache when it has the GPU to itself (evaluation),
# and accepts prompts plus replies up to this many tokens (the seed template with a long history fits).
VLLM_GPU_MEMORY_UTILIZATION = 0.85
VLLM_MAX_MODEL_LEN = 8192


class VLLMEngine:
    """One vLLM engine (GPU): created once for a model, serving it and any LoRA adapters trained on it, and shut
    down before the next model needs the memory. Use it as a context manager, or call `shutdown()`."""

    def __init__(self, model_path: str, dtype: str = "auto", max_model_len: int = VLLM_MAX_MODEL_LEN,
                 tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = VLLM_GPU_MEMORY_UTILIZATION, max_lora_rank: int = 0,
                 seed: int = 0):
        from vllm import LLM

        # LoRA support costs memory, so it is switched on only when adapters will be served.
        lora = {"enable_lora": True, "max_lora_rank": max_lora_rank} if max_lora_rank else {}
        self.llm = LLM(model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
                       tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                       **lora)
        self.adapters: dict[str, object] = {}

    def adapter(self, name: str, path: str):
        """The request that routes generation through the LoRA adapter in `path` (ids start at 1)."""
        from vllm.lora.request import LoRARequest

        if name not in self.adapters:
            self.adapters[name] = LoRARequest(lora_name=name, lora_int_id=len(self.adapters) + 1, lora_path=str(path))
        return self.adapters[name]

    def chat(self, chats: list[list[dict]], sampling, lora_request=None) -> list[str]:
        outputs = self.llm.chat(chats, sampling, use_tqdm=False, lora_request=lora_request)
        return [output.outputs[0].text for output in outputs]

    def shutdown(self) -> None:
        """Stop the engine's worker processes and return their GPU memory (vLLM 0.30 has no LLM.shutdown())."""
        if self.llm is None:
            return
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        cleanup_dist_env_and_memory()

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


class VLLMBackend:
    """Greedy replies from a `VLLMEngine`, through one of its LoRA adapters when `adapter_path` is given:
    continuous batching of all chats given at once."""

    def __init__(self, engine: VLLMEngine, name: str, max_new_tokens: int = 256, adapter_path: str | None = None):
        from vllm import SamplingParams

        self.engine, self.name, self.adapter_path = engine, name, adapter_path
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.lora_request = engine.adapter(name, adapter_path) if adapter_path else None

    def generate(self, chats: list[list[dict]]) -> list[str]:
        return self.engine.chat(chats, self.sampling, lora_request=self.lora_request)

    def with_max_new_tokens(self, max_new_tokens: int) -> "VLLMBackend":
        """The same engine (and adapter) with another reply length."""
        return VLLMBackend(self.engine, self.name, max_new_tokens, self.adapter_path)
