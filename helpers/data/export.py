"""Export to OpenAI's chat fine-tuning format, with exact token counts (o200k_base) and a cost estimate."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

from bpe_openai import get_encoding

from helpers.agent.prompts import parse_action
from helpers.agent.simulated_user import shown_text

RUN_PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "run_python",
        "description": "Run Python code in the REPL where `apis.<app>.<api>(...)` calls the apps; returns what it printed.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    },
}

# USD per million training tokens, from OpenAI's published fine-tuning prices (checked 2025); pass your own.
TRAINING_PRICE_PER_MILLION = {"gpt-4o-mini-2024-07-18": 3.00, "gpt-4o-2024-08-06": 25.00}


def stepwise_to_openai(record: dict) -> dict:
    """A prompt/completion record (or an episode record, already a chat) as one chat."""
    if "messages" in record:
        return {"messages": list(record["messages"])}
    return {"messages": [*record["prompt"], *record["completion"]]}


def conversation_to_openai(record: dict) -> dict:
    """A conversation whose code runs through a `run_python` tool call, as OpenAI's format requires.

    In our records an assistant message that acts holds the JSON {thought, action} and is followed by a
    `tool` message with the observation; OpenAI wants the code as a tool call answered by that message.
    """
    messages, call = [], 0
    source = record["messages"]
    for position, message in enumerate(source):
        acts = message["role"] == "assistant" and position + 1 < len(source) and source[position + 1]["role"] == "tool"
        if acts:
            call += 1
            action = parse_action(message["content"])
            arguments = json.dumps({"code": action.code})
            messages.append({"role": "assistant", "content": action.thought or None, "tool_calls": [
                {"id": f"call_{call}", "type": "function", "function": {"name": "run_python", "arguments": arguments}}]})
        elif message["role"] == "tool":
            messages.append({"role": "tool", "tool_call_id": f"call_{call}", "content": message["content"]})
        elif message["role"] == "assistant":  # a question as the user sees it, or the confirmation
            messages.append({"role": "assistant", "content": shown_text(message["content"])})
        else:
            messages.append({"role": message["role"], "content": message["content"]})
    return {"messages": messages, "tools": [RUN_PYTHON_TOOL]}


@dataclass
class TokenReport:
    examples: int
    tokens: int
    max_tokens: int

    def cost(self, model: str, epochs: int = 3, price_per_million: float | None = None) -> float:
        price = TRAINING_PRICE_PER_MILLION[model] if price_per_million is None else price_per_million
        return self.tokens * epochs * price / 1_000_000


def count_chat_tokens(chat: dict, encoding=None) -> int:
    """Tokens of one chat as OpenAI counts them: content plus about 3 tokens of framing per message."""
    encoding = encoding or get_encoding("o200k_base")
    total = 3
    for message in chat["messages"]:
        total += 3 + len(encoding.encode(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            total += len(encoding.encode(call["function"]["name"] + call["function"]["arguments"]))
    if "tools" in chat:
        total += len(encoding.encode(json.dumps(chat["tools"])))
    return total


def token_report(chats: Iterable[dict]) -> TokenReport:
    encoding = get_encoding("o200k_base")
    counts = [count_chat_tokens(chat, encoding) for chat in chats]
    return TokenReport(len(counts), sum(counts), max(counts, default=0))


def openai_chats(stepwise: Iterable[dict], conversations: Iterable[dict]) -> Iterator[dict]:
    yield from (stepwise_to_openai(r) for r in stepwise)
    yield from (conversation_to_openai(r) for r in conversations)
