"""Text generation backends behind one interface: `generate(chats) -> replies`, one reply per chat.

- transformers: batched greedy generation on the CPU or a GPU (left padding);
- vLLM: the offline engine on a GPU (not runnable on the CPU profiles);
- any OpenAI-compatible endpoint (GPT-4o, `vllm serve`, Ollama) with bounded concurrency and retries.
"""
from __future__ import annotations

from typing import Protocol

from helpers.generation import ChatGenerator, generate_replies
from helpers.llm_client import ChatClient


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


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server; the client bounds concurrency and retries."""

    def __init__(self, client: ChatClient, name: str | None = None, max_tokens: int = 512, temperature: float = 0.0):
        self.client, self.max_tokens, self.temperature = client, max_tokens, temperature
        self.name = name or client.config.model

    def generate(self, chats: list[list[dict]]) -> list[str]:
        return self.client.complete_many(chats, progress=False, temperature=self.temperature,
                                         max_tokens=self.max_tokens)


class VLLMBackend:
    """vLLM's offline engine (GPU): continuous batching of all chats given at once."""

    def __init__(self, model_path: str, name: str, max_new_tokens: int = 256, gpu_memory_utilization: float = 0.85,
                 max_model_len: int = 4096, tensor_parallel_size: int = 1, seed: int = 0):
        from vllm import LLM, SamplingParams

        self.name = name
        self.llm = LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       tensor_parallel_size=tensor_parallel_size, seed=seed)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(self, chats: list[list[dict]]) -> list[str]:
        outputs = self.llm.chat(chats, self.sampling, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]
