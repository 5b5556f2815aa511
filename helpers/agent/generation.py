"""Greedy replies to many chats at once: a stop at the end of the JSON reply, and, for multi-turn episodes,
each conversation's KV cache kept from one turn to the next.

On a CPU, re-reading the whole conversation at every step costs more than writing the reply: an
episode of six steps reads its first turns six times. Both generators below keep every conversation's
cache and read only what is new (the model's last reply and the code's output).

- `ChatGenerator` runs the project's decoder (`helpers.agent.decoding`) for Llama and Qwen2 models: a lean
  decode step, per-row cache lengths, draft tokens from each chat's own context. The default.
- `HFChatGenerator` runs transformers' `generate` with left padding, in rounds of `DECODE_ROUND_TOKENS`
  after which finished replies leave the batch: for any other architecture, and the reference the
  decoder's speed is measured against (`python -m helpers.benchmarks.decoding`).
- `generate_replies` is plain batched `generate`, no cache kept: the reference for their replies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm import tqdm
from transformers import DynamicCache, StaticCache, StoppingCriteria, StoppingCriteriaList

from helpers.agent.decoding import DEFAULT_DRAFT_TOKENS, Decoder, DecoderWeights, TokenText

# Tokens decoded before the finished replies leave the batch: each round rebuilds the cache of the rows left
# (one copy), which costs far less than a round of decoding rows whose reply has ended.
DECODE_ROUND_TOKENS = 32


def json_object_closed(text: str) -> bool:
    """Whether `text` holds a complete JSON object: from its first `{`, braces balance outside strings."""
    start = text.find("{")
    if start == -1:
        return False
    depth, quote, escaped = 0, None, False
    for char in text[start:]:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return True
    return False


class StopAtJsonEnd(StoppingCriteria):
    """Stops each sequence once its reply holds a complete JSON object: what follows would be thrown away.

    A base model that rambles on after its answer then costs nothing more, and neither does a trained
    model that would go on after the object instead of ending its turn.
    """

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        replies = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([json_object_closed(reply) for reply in replies], device=input_ids.device)


def render(tokenizer, chat: list[dict]) -> str:
    return tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate_replies(model, tokenizer, chats: Sequence[list[dict]], max_new_tokens: int = 256, batch_size: int = 16,
                     progress: bool = False, desc: str = "generating", stop_at_json: bool = True) -> list[str]:
    """The model's greedy reply to each chat (rendered with the tokenizer's chat template), no cache kept."""
    texts = [render(tokenizer, chat) for chat in chats]
    # sorting by length keeps padding small inside a batch; results are put back in input order
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies: list[str] = [""] * len(texts)
    model.eval()
    with _left_padding(tokenizer):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
            indices = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in indices], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            new_tokens = _generate(model, tokenizer, batch["input_ids"], batch["attention_mask"], None,
                                   max_new_tokens, stop_at_json)
            for i, text in zip(indices, _decode(tokenizer, new_tokens)):
                replies[i] = text
    return replies


@dataclass
class _Conversation:
    """A conversation's tokens so far (its prompt without the last token) and their keys and values per layer."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # each [1, kv_heads, len(ids), head_dim]


class HFChatGenerator:
    """Greedy replies to chats that grow turn by turn with transformers' `generate`, reusing each conversation's
    cache from its last turn.

    Each call reads, for every chat, only the tokens its cached conversation does not hold yet (one
    sequence at a time: reading is compute-bound, so batching it gains little), then decodes every chat
    of a batch together with left padding. Conversations not seen in a call are forgotten, so memory
    stays bounded by the chats in flight. Replies are the same as `generate_replies` up to float noise.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, batch_size: int = 16, stop_at_json: bool = True,
                 round_tokens: int = DECODE_ROUND_TOKENS):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size, self.stop_at_json = max_new_tokens, batch_size, stop_at_json
        self.round_tokens = round_tokens
        self._conversations: list[_Conversation] = []
        self.stats = {"tokens_read": 0, "tokens_reused": 0}

    @torch.no_grad()
    def generate(self, chats: Sequence[list[dict]]) -> list[str]:
        self.model.eval()
        prompts = [self.tokenizer(render(self.tokenizer, chat), add_special_tokens=False)["input_ids"]
                   for chat in chats]
        previous, self._conversations = self._conversations, []
        replies: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            states = [self._read(prompts[i], previous) for i in indices]
            self._conversations.extend(states)
            new_tokens = self._decode_batch([prompts[i] for i in indices], states)
            for i, text in zip(indices, _decode(self.tokenizer, new_tokens)):
                replies[i] = text
        return replies

    def _read(self, prompt: list[int], previous: list[_Conversation]) -> _Conversation:
        """The conversation of `prompt` brought up to its last token: from the best cached one, or from scratch."""
        target = prompt[:-1]  # the last token is fed by generate, which needs at least one new token
        best, shared = None, 0
        for conversation in previous:
            common = _common_prefix(conversation.ids, target)
            if common > shared:
                best, shared = conversation, common
        if best is not None:
            previous.remove(best)  # each cached conversation continues at most one chat
            layers = [(k[:, :, :shared], v[:, :, :shared]) for k, v in best.layers]
        else:
            layers = []
        self.stats["tokens_reused"] += shared
        self.stats["tokens_read"] += len(target) - shared
        if len(target) > shared:
            cache = DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()
            ids = torch.tensor([target[shared:]], device=self.model.device)
            positions = torch.arange(shared, len(target), device=self.model.device)[None]
            self.model(input_ids=ids, past_key_values=cache, position_ids=positions, use_cache=True, logits_to_keep=1)
            layers = [(layer.keys, layer.values) for layer in cache.layers]
        return _Conversation(target, layers)

    def _decode_batch(self, prompts: list[list[int]], states: list[_Conversation]) -> torch.Tensor:
        """Generate for a batch whose prompts, but for their last token, are in `states`' caches."""
        longest = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=self.model.device)
        attention = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        if not states[0].layers:  # nothing was read (every prompt is a single token)
            return _generate(self.model, self.tokenizer, input_ids, attention, None, self.max_new_tokens,
                             self.stop_at_json)
        layers = [(torch.cat([_left_pad(s.layers[index][0], longest - 1) for s in states]),
                   torch.cat([_left_pad(s.layers[index][1], longest - 1) for s in states]))
                  for index in range(len(states[0].layers))]
        return self._decode_in_rounds(input_ids, attention, layers)

    def _decode_in_rounds(self, input_ids, attention, layers) -> torch.Tensor:
        """Greedy decoding of a left-padded batch whose cache (`layers`, per layer [rows, kv_heads, n, head_dim])
        holds every token but the last, `round_tokens` at a time; rows whose reply ended leave between rounds."""
        start, rows = input_ids.shape[1], input_ids.shape[0]
        replies = input_ids.new_full((rows, self.max_new_tokens), self.tokenizer.pad_token_id)
        alive = torch.arange(rows, device=input_ids.device)
        while True:
            written = input_ids.shape[1] - start
            budget = min(self.round_tokens, self.max_new_tokens - written)
            # A static cache is written in place; a dynamic one copies every layer's whole cache for each new token.
            cache = StaticCache(config=self.model.config, max_cache_len=input_ids.shape[1] - 1 + budget)
            for index, layer in enumerate(cache.layers):
                layer.update(layers[index][0], layers[index][1])
            new = _generate(self.model, self.tokenizer, input_ids, attention, cache, budget, self.stop_at_json,
                            reply_start=start)
            replies[alive, written:written + new.shape[1]] = new
            input_ids = torch.cat([input_ids, new], dim=1)
            if new.shape[1] < budget or input_ids.shape[1] - start >= self.max_new_tokens:
                return replies  # every reply has ended (generate stops when all rows are done), or none may go on
            going = torch.tensor([not self._ended(row, start) for row in input_ids], device=input_ids.device)
            if not going.any():
                return replies
            length = input_ids.shape[1] - 1
            layers = [(layer.keys[going, :, :length], layer.values[going, :, :length]) for layer in cache.layers]
            alive, input_ids = alive[going], input_ids[going]
            attention = torch.cat([attention, attention.new_ones(attention.shape[0], new.shape[1])], dim=1)[going]

    def _ended(self, row: torch.Tensor, start: int) -> bool:
        reply = row[start:]
        if (reply == self.tokenizer.eos_token_id).any():
            return True
        return self.stop_at_json and json_object_closed(self.tokenizer.decode(reply, skip_special_tokens=True))


def _generate(model, tokenizer, input_ids, attention_mask, cache, max_new_tokens: int, stop_at_json: bool,
              reply_start: int | None = None):
    """Greedy tokens after `input_ids`; the JSON stop reads each reply from `reply_start` (the prompt's end when
    None; earlier when `input_ids` already end with part of the reply)."""
    start = input_ids.shape[1] if reply_start is None else reply_start
    stopping = StoppingCriteriaList([StopAtJsonEnd(tokenizer, start)]) if stop_at_json else None
    # Without a cache of ours, a static one too: preallocated and written in place (see _decode_batch).
    static = {"cache_implementation": "static", "disable_compile": True} if cache is None else {}
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                            max_new_tokens=max_new_tokens, do_sample=False, stopping_criteria=stopping,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **static)
    return output[:, input_ids.shape[1]:]


def _decode(tokenizer, new_tokens: torch.Tensor) -> list[str]:
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """[1, heads, n, dim] -> [1, heads, length, dim], zeros first (masked out by the attention mask)."""
    missing = length - tensor.shape[2]
    if missing == 0:
        return tensor
    zeros = tensor.new_zeros(tensor.shape[0], tensor.shape[1], missing, tensor.shape[3])
    return torch.cat([zeros, tensor], dim=2)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class _left_padding:
    """Left padding for the duration of a batched generation, whatever the tokenizer's own setting."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __enter__(self):
        self.saved, self.tokenizer.padding_side = self.tokenizer.padding_side, "left"

    def __exit__(self, *exc):
        self.tokenizer.padding_side = self.saved


class ChatGenerator:
    """Greedy replies to chats that grow turn by turn, through the project's decoder where it handles the model.

    The same interface and replies as `HFChatGenerator` (greedy decoding, the JSON stop, each conversation's
    cache kept for its next turn), several times faster on a CPU; models the decoder does not handle
    (other architectures, PEFT wrappers) go through `HFChatGenerator`.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, batch_size: int = 16, stop_at_json: bool = True,
                 draft_tokens: int = DEFAULT_DRAFT_TOKENS):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size, self.stop_at_json = max_new_tokens, batch_size, stop_at_json
        weights = DecoderWeights.from_model(model)
        self.fallback = None if weights is not None else HFChatGenerator(model, tokenizer, max_new_tokens, batch_size,
                                                                         stop_at_json)
        self.decoder = None if weights is None else Decoder(
            model, [tokenizer.eos_token_id], max_new_tokens, batch_size, draft_tokens, weights=weights,
            token_text=TokenText(tokenizer))

    @property
    def stats(self) -> dict:
        return self.fallback.stats if self.decoder is None else self.decoder.stats.as_dict()

    def generate(self, chats: Sequence[list[dict]], progress: bool = False, desc: str = "generating") -> list[str]:
        """Greedy replies, in the order of `chats`; `progress` shows a bar of chats done (the decoder's path)."""
        if self.decoder is None:
            return self.fallback.generate(chats)
        prompts = [self.tokenizer(render(self.tokenizer, chat), add_special_tokens=False)["input_ids"]
                   for chat in chats]
        replies = self.decoder.generate(prompts, stop_at_json=self.stop_at_json, progress=progress, desc=desc)
        return [text.strip() for text in self.tokenizer.batch_decode(replies, skip_special_tokens=True)]
