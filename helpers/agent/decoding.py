"""Batched decoding of token sequences for Llama- and Qwen2-style models, written for a CPU.

`transformers`' `generate` spends most of a small model's decode step outside arithmetic: logits
processors, stopping criteria that decode every row's text at every token, cache bookkeeping. Here a
step is one pass of plain tensor operations over a preallocated cache, and every per-token test
(end of turn, end of the JSON reply, length) is done on token ids or on a few characters per row.

Three things make it fast:
- one cache block per call, each row at its own length (no left padding): rows that finish leave the
  block, and the rows of a conversation that goes on keep their keys and values for the next call;
- q/k/v and gate/up fused into single matrix products, in bf16 where the CPU computes it natively;
- draft tokens looked up in each row's own context (prompt lookup): a reply that repeats a name, an API
  call or a variable from earlier turns is checked several tokens at a time. A checked token costs
  about as much as a new one, because a decode step is bound by reading the weights and the cache,
  not by arithmetic. Greedy replies are those of plain greedy decoding; sampled replies follow the
  model's distribution exactly (speculative sampling with the draft as a point mass).

Architectures other than Llama and Qwen2 (and PEFT-wrapped models) are not handled: `DecoderWeights.
from_model` returns None and callers fall back to `transformers`' `generate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers.activations import ACT2FN

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
DEFAULT_DRAFT_TOKENS = 4
# Sampled replies accept far fewer drafts (GRPO's rollouts at 0.7: 27% of 4-token drafts, 51% of 1-token drafts,
# against 66% greedy), and a rejected draft costs a whole position: one draft token was the fastest (26 fresh
# rollout episodes: 76.6 s, against 85.4 s with 4 and 88.2 s with none).
SAMPLED_DRAFT_TOKENS = 1
# Greedy rows draft by their own record: a draft token is proposed while the chance that it is accepted (the row's
# rate of accepted draft tokens, to the power of its place in the draft) is at least DRAFT_KEEP. Agent episodes
# accept fewer drafts than chats that repeat their prompt (29% against 66% of 4-token drafts), and a long draft
# that is rejected costs every row of the step a position. 0.25 played the 39 test_normal tasks 1.10x faster than
# always drafting 4 (0.5: 48 dev chats 1.17x slower; docs/benchmarks-speed.md).
DRAFT_KEEP = 0.25
DRAFT_PRIOR_RATE, DRAFT_PRIOR_WEIGHT = 0.8, 8  # a call's rate before it has drafted, and how many tokens that counts
DRAFT_ROW_WEIGHT = 4  # the call's rate counts as this many draft tokens in each row's rate
DRAFT_NGRAM = 3  # the longest context suffix looked up for a draft; shorter ones are tried after it
MIN_SHARED_TOKENS = 16  # a shorter prefix shared within a call is read again rather than copied (a wave less)
SHARED_DRAFTS_LIMIT = 2_000_000  # n-grams kept across calls before the table starts afresh


@dataclass
class _Layer:
    norm_in: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    norm_post: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


@dataclass
class DecoderWeights:
    """A causal LM's weights arranged for decoding: q, k and v in one matrix, gate and up in another."""

    layers: list[_Layer]
    embed: torch.Tensor
    norm: torch.Tensor
    head: torch.Tensor
    rotary: torch.nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    act: Callable
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def from_model(cls, model, dtype: torch.dtype | None = None) -> "DecoderWeights | None":
        """The weights of `model` in `dtype` (the model's own by default), or None for an architecture not handled.

        A PEFT model (a LoRA adapter on its base) gives its merged weights, copied while the adapter is merged
        in; the model is left as it was.
        """
        if hasattr(model, "merge_adapter") and hasattr(model, "get_base_model"):
            model.merge_adapter()
            try:
                return cls._from_plain(model.get_base_model(), dtype, copy=True)
            finally:
                model.unmerge_adapter()
        return cls._from_plain(model, dtype)

    @classmethod
    def _from_plain(cls, model, dtype: torch.dtype | None, copy: bool = False) -> "DecoderWeights | None":
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES \
                or not hasattr(getattr(model, "model", None), "layers"):
            return None
        if any(type(p).__name__ == "Params4bit" or p.dtype == torch.uint8 for p in model.parameters()):
            return None  # 4-bit weights (QLoRA): transformers' generate reads them
        if getattr(config, "use_sliding_window", False):
            return None
        dtype = dtype or model.dtype
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads

        def prepared(tensor):
            tensor = tensor.detach().to(dtype)
            return tensor.clone(memory_format=torch.contiguous_format) if copy else tensor.contiguous()

        layers = []
        with torch.no_grad():
            for layer in model.model.layers:
                attention, mlp = layer.self_attn, layer.mlp
                projections = (attention.q_proj, attention.k_proj, attention.v_proj)
                biases = [p.bias for p in projections]
                layers.append(_Layer(
                    norm_in=prepared(layer.input_layernorm.weight),
                    qkv=prepared(torch.cat([p.weight for p in projections])),
                    qkv_bias=prepared(torch.cat(biases)) if all(b is not None for b in biases) else None,
                    o=prepared(attention.o_proj.weight),
                    norm_post=prepared(layer.post_attention_layernorm.weight),
                    gate_up=prepared(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
                    down=prepared(mlp.down_proj.weight),
                ))
            embed = prepared(model.model.embed_tokens.weight)
            head_weight = model.lm_head.weight
            head = embed if head_weight is model.model.embed_tokens.weight else prepared(head_weight)
        return cls(layers, embed, prepared(model.model.norm.weight), head, model.model.rotary_emb, heads, kv_heads,
                   head_dim, config.intermediate_size, config.rms_norm_eps, ACT2FN[config.hidden_act], dtype,
                   embed.device)


class KVBlock:
    """Keys and values of a batch of rows, each row at its own length, per layer: keys [rows, kv_heads, head_dim,
    capacity] (transposed), values [rows, kv_heads, capacity, head_dim].

    Heads before positions: a decode step's attention then multiplies each row's queries by one matrix per
    head (2x faster than over a positions-first cache at 48 rows of 5 queries, measured), and writing a step's
    few positions per row costs microseconds in either layout. Keys transposed: attention reads each row's
    first positions, a view with gaps between its matrices, which a batched product copies before it
    multiplies; copying transposed keys is a plain strided copy, copying a transposed view of them was 2.6x
    slower (measured). Zeros, not empty memory: a masked position's weight is 0, and 0 times a stale value
    must not be NaN.
    """

    def __init__(self, weights: DecoderWeights, rows: int, capacity: int):
        shape = (rows, weights.kv_heads, capacity, weights.head_dim)
        self.keys = [torch.zeros(shape, dtype=weights.dtype, device=weights.device).transpose(2, 3).contiguous()
                     for _ in weights.layers]
        self.values = [torch.zeros(shape, dtype=weights.dtype, device=weights.device) for _ in weights.layers]
        self.capacity = capacity

    def part(self, rows: int, capacity: int) -> "KVBlock":
        """A block of `rows` rows and `capacity` positions in this one's memory (views: no allocation)."""
        block = object.__new__(KVBlock)
        block.keys = [k[:rows, ..., :capacity] for k in self.keys]
        block.values = [v[:rows, :, :capacity] for v in self.values]
        block.capacity = capacity
        return block

    def fill(self, row: int, keys: list[torch.Tensor], values: list[torch.Tensor], start: int, end: int) -> None:
        """Copy positions [start, end) of one sequence's keys and values (per layer [kv, dim, T] and [kv, T, dim]:
        a stored conversation, or another row of this block) into `row`."""
        for layer in range(len(self.keys)):
            self.keys[layer][row, ..., start:end] = keys[layer][..., start:end]
            self.values[layer][row, :, start:end] = values[layer][:, start:end]

    def keep(self, rows: torch.Tensor, used: int) -> None:
        """Keep only `rows` (sorted), moved to the front of the block in place (fresh tensors would cost a page fault
        per 4 kB, several times the copy); only their first `used` positions hold anything."""
        count = len(rows)
        for layer, (keys, values) in enumerate(zip(self.keys, self.values)):
            keys[:count, ..., :used] = keys[rows, ..., :used]
            values[:count, :, :used] = values[rows, :, :used]
            self.keys[layer], self.values[layer] = keys[:count], values[:count]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # as transformers' LlamaRMSNorm: the statistics in fp32, the scale in the model's dtype
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@torch.no_grad()
def forward(weights: DecoderWeights, cache: KVBlock, tokens: torch.Tensor, starts: torch.Tensor,
            scored: torch.Tensor | None = None, logits: bool = True) -> torch.Tensor | None:
    """Run `tokens` [rows, S] placed at positions `starts[r] + j`, writing their keys and values into `cache`.

    Returns the logits (fp32) at every position, [rows, S, vocab], or only at the positions of `scored`
    ([rows] index of the one position per row to score) as [rows, vocab]; none with `logits=False` (a prefill).
    A position sees the cache up to
    and including itself; what a row holds beyond that is masked (weight 0), so stale entries need no clearing.
    """
    rows, length = tokens.shape
    device = tokens.device
    offsets = torch.arange(length, device=device)
    positions = starts[:, None] + offsets[None]  # [rows, S]
    # Padding after a short row of a prefill pass may run past the block: it writes into the last slot instead,
    # which that row's own later tokens overwrite before any of its queries can see it.
    slots = positions.clamp(max=cache.capacity - 1)
    visible = int(slots.max()) + 1
    # a key at t is visible to the query at p when t <= p
    mask = (torch.arange(visible, device=device)[None, None, :] <= positions[:, :, None])[:, None]
    if length <= SHORT_QUERIES:
        # a decode step: rows of similar lengths attend together, each group only as far as its longest row
        seen_by_row = (slots.max(dim=1).values + 1).tolist()
        parts = [(slice(first, first + ROW_GROUP), max(seen_by_row[first:first + ROW_GROUP]))
                 for first in range(0, rows, ROW_GROUP)]
        parts = [(part, seen, mask[part, :, :, :seen]) for part, seen in parts]
    hidden = F.embedding(tokens, weights.embed)
    cos, sin = weights.rotary(hidden, positions)
    cos, sin = cos[:, :, None], sin[:, :, None]  # [rows, S, 1, head_dim]: every head
    heads, kv_heads, head_dim = weights.heads, weights.kv_heads, weights.head_dim
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    row_index = torch.arange(rows, device=device)[:, None]
    for number, layer in enumerate(weights.layers):
        x = _rms_norm(hidden, layer.norm_in, weights.eps)
        qkv = F.linear(x, layer.qkv, layer.qkv_bias)
        q = qkv[..., :q_size].view(rows, length, heads, head_dim)
        k = qkv[..., q_size:q_size + kv_size].view(rows, length, kv_heads, head_dim)
        v = qkv[..., q_size + kv_size:].view(rows, length, kv_heads, head_dim)
        q = (q * cos + _rotate_half(q) * sin).transpose(1, 2)
        k = k * cos + _rotate_half(k) * sin
        keys, values = cache.keys[number], cache.values[number]
        keys.permute(0, 3, 1, 2)[row_index, slots] = k  # each row at its own positions
        values.transpose(1, 2)[row_index, slots] = v
        if length > SHORT_QUERIES:
            # the fused kernel reads transposed keys slowly: a prefill pass copies them back (a small copy)
            attended = F.scaled_dot_product_attention(q, keys[..., :visible].transpose(2, 3).contiguous(),
                                                      values[:, :, :visible], attn_mask=mask,
                                                      enable_gqa=heads != kv_heads)
        else:
            attended = torch.cat([_short_attention(q[part], keys[part, ..., :seen], values[part, :, :seen], part_mask)
                                  for part, seen, part_mask in parts])
        hidden = hidden + F.linear(attended.transpose(1, 2).reshape(rows, length, q_size), layer.o)
        x = _rms_norm(hidden, layer.norm_post, weights.eps)
        gate, up = F.linear(x, layer.gate_up).split(weights.intermediate, dim=-1)
        hidden = hidden + F.linear(weights.act(gate) * up, layer.down)
    if not logits:
        return None
    if scored is not None:
        hidden = hidden[torch.arange(rows, device=device), scored]
    return F.linear(_rms_norm(hidden, weights.norm, weights.eps), weights.head).float()


SHORT_QUERIES = 8  # a decode step's width: at most this many queries per row go through plain products
ROW_GROUP = 16  # rows of a decode step that attend together, as far as the longest of them


def _short_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of a few queries per row, q [rows, heads, S, dim], over keys [rows, kv_heads, dim, T] and values
    [rows, kv_heads, T, dim], with `mask` [rows, 1, S, T].

    A decode step (a token and its drafts) is a few rows of queries per head: there PyTorch's fused CPU
    kernel ran 2-10x slower than two products and a softmax over each row's keys (measured at 1-48 rows,
    500-1000 positions), the queries of the heads that share a key head stacked into one product. A prefill
    pass (many queries) stays with the fused kernel, which was as fast or faster there.
    """
    rows, heads, length, dim = q.shape
    kv_heads, visible = keys.shape[1], keys.shape[3]
    group = heads // kv_heads
    grouped = q.reshape(rows, kv_heads, group * length, dim)
    scores = torch.matmul(grouped, keys).view(rows, kv_heads, group, length, visible)
    scores = scores.float().mul_(dim ** -0.5).masked_fill_(~mask[:, :, None], float("-inf"))
    weights = torch.softmax(scores, dim=-1).to(q.dtype).view(rows, kv_heads, group * length, visible)
    return torch.matmul(weights, values).view(rows, heads, length, dim)


class JsonEnd:
    """Tells, one token at a time, when a reply's first JSON object closes: the incremental form of
    `json_object_closed` (braces balance outside strings, from the first `{`)."""

    __slots__ = ("started", "depth", "quote", "escaped")

    def __init__(self):
        self.started, self.depth, self.quote, self.escaped = False, 0, None, False

    def feed(self, text: str) -> bool:
        for char in text:
            if not self.started:
                if char != "{":
                    continue
                self.started = True
            if self.quote is not None:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == self.quote:
                    self.quote = None
            elif char in "\"'":
                self.quote = char
            elif char == "{":
                self.depth += 1
            elif char == "}":
                self.depth -= 1
                if self.depth == 0:
                    return True
        return False


class TokenText:
    """The text each token id adds to a decoded reply (special tokens add none), looked up once per id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        self._pieces: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = "" if token in self.special else self.tokenizer.decode([token])
            self._pieces[token] = piece
        return piece


class _Drafts:
    """Draft tokens for one row: what followed the latest earlier occurrence of the row's last few tokens, in its
    own context first, then in any sequence the decoder has seen (`shared`: an agent writes the same login code,
    the same API calls and the same phrases in every episode, so other rows predict it well)."""

    def __init__(self, ids: list[int], ngram: int = DRAFT_NGRAM, shared: dict | None = None):
        self.ids, self.ngram, self.shared = ids, ngram, shared
        self.seen: dict[tuple, int] = {}  # n-gram -> the position right after its latest occurrence
        for end in range(1, len(ids)):
            self._index(end)

    def _index(self, end: int) -> None:
        # the n-grams ending just before `end`; called once `end` is known, so the value is what followed
        for n in range(1, self.ngram + 1):
            if end - n >= 0:
                self.seen[tuple(self.ids[end - n:end])] = end
        if self.shared is not None and end - self.ngram >= 0:
            self.shared[tuple(self.ids[end - self.ngram:end])] = (self.ids, end)

    def append(self, token: int) -> None:
        self.ids.append(token)
        self._index(len(self.ids) - 1)

    def propose(self, count: int) -> list[int]:
        ids = self.ids
        for n in range(min(self.ngram, len(ids)), 0, -1):
            key = tuple(ids[-n:])
            follow = self.seen.get(key)
            if follow is not None and follow < len(ids):
                return ids[follow:follow + count]
            if n == self.ngram and self.shared is not None and key in self.shared:
                source, follow = self.shared[key]
                if source is not ids or follow < len(ids):
                    return source[follow:follow + count]
        return []


@dataclass
class Conversation:
    """A sequence whose keys and values are kept: `ids` (its tokens but the last), per layer keys [kv, dim, len] and
    values [kv, len, dim]."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


@dataclass
class DecodeStats:
    tokens_read: int = 0  # prompt tokens run through the model
    tokens_reused: int = 0  # prompt tokens whose keys and values came from an earlier call
    tokens_shared: int = 0  # prompt tokens whose keys and values were copied from another row of the same call
    tokens_written: int = 0  # reply tokens
    steps: int = 0  # decode passes (each writes one to draft_tokens + 1 tokens per row)
    drafted: int = 0
    accepted: int = 0
    rejected: int = 0
    compactions: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class _Row:
    index: int  # in the caller's list
    prompt: list[int]
    reply: list[int] = field(default_factory=list)
    done: bool = False
    json_end: JsonEnd | None = None
    drafts: _Drafts | None = None
    accepted: int = 0  # draft tokens accepted
    rejected: int = 0  # draft tokens rejected (at most one a step: those after it are not judged)


class Decoder:
    """Replies to many token sequences at once; each sequence's cache is kept for its continuation in the next call.

    `generate(prompts)` returns each prompt's reply ids: greedy when `temperature` is 0, else sampled (with
    `top_p`), ending with an end-of-turn id, at the end of the reply's JSON object (`stop_at_json`, which
    needs `token_text`), or after `max_new_tokens`. Conversations not continued in a call are forgotten.
    """

    def __init__(self, model, eos_token_ids: Sequence[int], max_new_tokens: int = 256, batch_size: int = 64,
                 draft_tokens: int = DEFAULT_DRAFT_TOKENS, dtype: torch.dtype | None = None,
                 token_text: TokenText | None = None, weights: DecoderWeights | None = None,
                 prefill_tokens: int = 4096, draft_keep: float = DRAFT_KEEP):
        self.weights = weights or DecoderWeights.from_model(model, dtype)
        if self.weights is None:
            raise ValueError(f"{type(model).__name__} is not a Llama or Qwen2 model: use transformers' generate.")
        self.eos = set(int(t) for t in eos_token_ids)
        self.max_new_tokens, self.batch_size, self.draft_tokens = max_new_tokens, batch_size, draft_tokens
        self.draft_keep = draft_keep  # 0: greedy rows always propose draft_tokens
        self.token_text = token_text
        self.prefill_tokens = prefill_tokens  # rows x length of one prefill pass, to bound its activations
        self.conversations: list[Conversation] = []
        self.stats = DecodeStats()
        self.shared_drafts: dict = {}  # n-gram -> (a sequence, the position after it), over every call
        self.pool: KVBlock | None = None  # memory for the cache blocks of every call, grown as needed

    def refresh(self, model) -> None:
        """Take the model's current weights (after an optimizer step), in the same dtype."""
        self.weights = DecoderWeights.from_model(model, self.weights.dtype)
        self.conversations = []  # their keys and values came from the old weights

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], temperature: float = 0.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, stop_at_json: bool = False,
                 max_new_tokens: int | None = None, progress: bool = False,
                 desc: str = "generating") -> list[list[int]]:
        if stop_at_json and self.token_text is None:
            raise ValueError("stop_at_json needs token_text, to read each token's characters")
        limit = max_new_tokens or self.max_new_tokens
        if len(self.shared_drafts) > SHARED_DRAFTS_LIMIT:
            self.shared_drafts.clear()
        previous, self.conversations = self.conversations, []
        replies: list[list[int]] = [[] for _ in prompts]
        # similar lengths side by side: less padding when prefilling, similar cache lengths when decoding
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        bar = tqdm(total=len(prompts), desc=desc, unit="chat", disable=not progress)
        for start in range(0, len(order), self.batch_size):
            rows = [_Row(i, list(prompts[i])) for i in order[start:start + self.batch_size]]
            for row in rows:
                if not row.prompt:
                    raise ValueError("every prompt needs at least one token")
                row.json_end = JsonEnd() if stop_at_json else None
            self._decode_block(rows, previous, limit, temperature, top_p, generator)
            for row in rows:
                replies[row.index] = row.reply
            bar.update(len(rows))
        bar.close()
        return replies

    # ---- one block of rows: gather cached prefixes, read the rest, decode ----

    def _decode_block(self, rows: list[_Row], previous: list[Conversation], limit: int, temperature: float,
                      top_p: float, generator) -> None:
        previous_ids = [c.ids for c in previous]
        sources = [_longest_shared(row.prompt[:-1], previous_ids) for row in rows]
        capacity = max(len(row.prompt) for row in rows) + limit + self.draft_tokens + 1
        cache = self._block(len(rows), capacity)
        lengths = []
        for number, (source, shared) in enumerate(sources):
            if source is not None and shared:
                cache.fill(number, previous[source].keys, previous[source].values, 0, shared)
            lengths.append(shared)
            self.stats.tokens_reused += shared
        self._prefill_sharing(cache, rows, lengths)
        lengths = torch.tensor([len(row.prompt) - 1 for row in rows], device=self.weights.device)
        last = torch.tensor([row.prompt[-1] for row in rows], device=self.weights.device)
        for row in rows:
            row.drafts = _Drafts(list(row.prompt), shared=self.shared_drafts) if self.draft_tokens else None
        block = list(range(len(rows)))  # the row of `rows` that each cache row holds
        drafts = self.draft_tokens if temperature <= 0 else min(self.draft_tokens, SAMPLED_DRAFT_TOKENS)
        before = (self.stats.accepted, self.stats.rejected)  # the block's own counts are the stats' growth
        while True:
            live = [r for r, i in enumerate(block) if not rows[i].done]
            if not live:
                return
            parked = len(block) - len(live)
            # a finished row still costs its share of every step: drop such rows once they are a quarter
            if parked and (parked >= 2 or parked * 4 >= len(block)):
                keep = torch.tensor(live, device=self.weights.device)
                cache.keep(keep, int(lengths[keep].max()))
                self.stats.compactions += 1
                block, lengths, last = [block[r] for r in live], lengths[keep], last[keep]
                live = list(range(len(block)))
            call = (self.stats.accepted - before[0], self.stats.rejected - before[1])
            proposals = [rows[i].drafts.propose(self._draft_length(rows[i], drafts, temperature, call,
                                                                 self.draft_keep))
                         if rows[i].drafts and not rows[i].done else [] for i in block]
            width = 1 + max(len(p) for p in proposals)
            tokens = torch.zeros((len(block), width), dtype=torch.long, device=self.weights.device)
            tokens[:, 0] = last
            for r, proposal in enumerate(proposals):
                if proposal:
                    tokens[r, 1:1 + len(proposal)] = torch.tensor(proposal)
            logits = forward(self.weights, cache, tokens, lengths)
            self.stats.steps += 1
            chosen = self._choose(logits, proposals, temperature, top_p, generator)
            advanced, new_last, finished = lengths.clone(), last.clone(), []
            for r in live:
                row, emitted = rows[block[r]], chosen[r]
                accepted = len(emitted) - 1
                rejected = int(accepted < len(proposals[r]))
                self.stats.drafted += len(proposals[r])
                self.stats.accepted += accepted
                self.stats.rejected += rejected
                row.accepted += accepted
                row.rejected += rejected
                self._take(row, emitted, limit)
                # the step wrote keys and values for the fed token and the accepted drafts
                advanced[r] += len(emitted)
                new_last[r] = emitted[-1]
                if row.done:
                    finished.append(r)
            # parked rows stay where they are: their throwaway writes land beyond what was stored for them
            lengths, last = advanced, new_last
            if finished:
                self._store([rows[block[r]] for r in finished], cache, finished, lengths)

    def _block(self, rows: int, capacity: int) -> KVBlock:
        """A cache block in the decoder's kept memory: a fresh block per call would cost a page fault per 4 kB.
        What earlier calls left there needs no clearing (a position beyond a row's length is masked)."""
        pool = self.pool
        if pool is None or len(pool.keys[0]) < rows or pool.capacity < capacity:
            size = (rows, capacity) if pool is None else (max(rows, len(pool.keys[0])), max(capacity, pool.capacity))
            self.pool = pool = None  # free the old memory before taking the new
            self.pool = KVBlock(self.weights, *size)
        return self.pool.part(rows, capacity)

    def _prefill_sharing(self, cache: KVBlock, rows: list[_Row], lengths: list[int]) -> None:
        """Read every row's prompt, copying what a row shares with an earlier row of the block instead of reading it.

        Chats of one call often share long beginnings (the system prompt; a group of rollouts of one task; the
        steps of one episode). A row whose prompt shares more with an earlier row than its cache holds becomes
        that row's follower: it copies the shared keys and values once the earlier row has been read, and reads
        only the rest. Rows are read in waves (a follower one wave after the row it copies from).
        """
        wave, donors, targets = [0] * len(rows), {}, [row.prompt[:-1] for row in rows]
        for number, target in enumerate(targets):
            donor, shared = _longest_shared(target, targets[:number])
            if donor is not None and shared >= lengths[number] + MIN_SHARED_TOKENS:
                donors[number] = (donor, shared)
                wave[number] = wave[donor] + 1
        for current in range(max(wave) + 1):
            members = [n for n in range(len(rows)) if wave[n] == current]
            for number in members:
                if number in donors:
                    donor, shared = donors[number]
                    start = lengths[number]
                    cache.fill(number, [k[donor] for k in cache.keys], [v[donor] for v in cache.values], start, shared)
                    self.stats.tokens_shared += shared - start
                    lengths[number] = shared
            self._prefill(cache, rows, lengths, members)

    def _prefill(self, cache: KVBlock, rows: list[_Row], lengths: list[int], numbers: list[int]) -> None:
        """Read the prompts (but their last token) of rows `numbers` from where each row's cached prefix ends, in
        passes of similar rows."""
        pending = [(n, lengths[n], rows[n].prompt[:-1]) for n in numbers if len(rows[n].prompt) - 1 > lengths[n]]
        pending.sort(key=lambda item: len(item[2]) - item[1])
        while pending:
            width = len(pending[0][2]) - pending[0][1]
            group = [pending.pop(0)]
            while pending and (len(group) + 1) * max(width, len(pending[0][2]) - pending[0][1]) <= self.prefill_tokens:
                width = max(width, len(pending[0][2]) - pending[0][1])
                group.append(pending.pop(0))
            numbers = torch.tensor([n for n, _, _ in group], device=self.weights.device)
            tokens = torch.zeros((len(group), width), dtype=torch.long, device=self.weights.device)
            for r, (_, start, ids) in enumerate(group):
                tokens[r, :len(ids) - start] = torch.tensor(ids[start:])
                self.stats.tokens_read += len(ids) - start
            starts = torch.tensor([start for _, start, _ in group], device=self.weights.device)
            if [n for n, _, _ in group] == list(range(len(rows))):  # every row, in order: no need to gather them
                forward(self.weights, cache, tokens, starts, logits=False)
            else:
                self._prefill_rows(cache, numbers, tokens, starts)

    def _prefill_rows(self, cache: KVBlock, numbers: torch.Tensor, tokens: torch.Tensor, starts: torch.Tensor) -> None:
        sub = _SubBlock(cache, numbers, min(int(starts.max()) + tokens.shape[1], cache.capacity))
        forward(self.weights, sub, tokens, starts, logits=False)
        sub.write_back()

    @staticmethod
    def _draft_length(row: _Row, cap: int, temperature: float, call: tuple[int, int], keep: float = DRAFT_KEEP) -> int:
        """How many draft tokens the row proposes this step: `cap` when sampling, else by its acceptance so far."""
        if temperature > 0 or cap == 0:
            return cap
        call_rate = (call[0] + DRAFT_PRIOR_RATE * DRAFT_PRIOR_WEIGHT) / (sum(call) + DRAFT_PRIOR_WEIGHT)
        rate = (row.accepted + call_rate * DRAFT_ROW_WEIGHT) / (row.accepted + row.rejected + DRAFT_ROW_WEIGHT)
        length = 0
        while length < cap and rate ** (length + 1) >= keep:
            length += 1
        return length

    def _choose(self, logits: torch.Tensor, proposals: list[list[int]], temperature: float, top_p: float,
                generator) -> list[list[int]]:
        """The tokens each row emits this step: accepted drafts plus one token of the model's own."""
        if temperature <= 0:
            best = logits.argmax(-1).tolist()
            out = []
            for row_best, proposal in zip(best, proposals):
                emitted = [row_best[0]]
                for j, token in enumerate(proposal):
                    if token != row_best[j]:
                        break
                    emitted.append(row_best[j + 1])
                out.append(emitted)
            return out
        probabilities = _probabilities(logits, temperature, top_p)
        out = []
        for r, proposal in enumerate(proposals):
            emitted = []
            for j, token in enumerate(proposal):
                p = probabilities[r, j]
                if torch.rand((), generator=generator, device=p.device) < p[token]:
                    emitted.append(token)
                    continue
                residual = p.clone()
                residual[token] = 0
                emitted.append(int(torch.multinomial(residual / residual.sum(), 1, generator=generator)))
                break
            else:
                emitted.append(int(torch.multinomial(probabilities[r, len(proposal)], 1, generator=generator)))
            out.append(emitted)
        return out

    def _take(self, row: _Row, emitted: list[int], limit: int) -> int:
        """Append `emitted` to the row's reply up to its stop; returns how many were taken."""
        taken = 0
        for token in emitted:
            if row.done:
                break
            row.reply.append(token)
            taken += 1
            if row.drafts is not None:
                row.drafts.append(token)
            if token in self.eos or len(row.reply) >= limit:
                row.done = True
            elif row.json_end is not None and row.json_end.feed(self.token_text(token)):
                row.done = True
        self.stats.tokens_written += taken
        return taken

    def _store(self, rows: list[_Row], cache: KVBlock, positions: list[int], lengths: torch.Tensor) -> None:
        """Keep each finished row's keys and values, for a next call that continues its conversation."""
        for row, position in zip(rows, positions):
            # the cache holds the prompt and the reply up to the token fed last; keep only what the reply kept
            length = min(int(lengths[position]), len(row.prompt) + len(row.reply))
            ids = (row.prompt + row.reply)[:length]
            self.conversations.append(Conversation(
                ids, [k[position, ..., :length].clone() for k in cache.keys],
                [v[position, :, :length].clone() for v in cache.values]))  # copies: compaction reuses the block


class _SubBlock:
    """Some rows of a KVBlock, their first `end` positions (all a prefill pass reads or writes), gathered for the
    pass and written back after it."""

    def __init__(self, block: KVBlock, rows: torch.Tensor, end: int):
        self.block, self.rows, self.end, self.capacity = block, rows, end, end
        self.keys = [k[rows, ..., :end] for k in block.keys]
        self.values = [v[rows, :, :end] for v in block.values]

    def write_back(self) -> None:
        for layer in range(len(self.keys)):
            self.block.keys[layer][self.rows, ..., :self.end] = self.keys[layer]
            self.block.values[layer][self.rows, :, :self.end] = self.values[layer]


def _probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    probabilities = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        ordered, indices = probabilities.sort(dim=-1, descending=True)
        outside = ordered.cumsum(-1) - ordered > top_p  # keep the smallest set whose mass reaches top_p
        ordered = ordered.masked_fill(outside, 0.0)
        probabilities = torch.zeros_like(probabilities).scatter(-1, indices, ordered)
        probabilities = probabilities / probabilities.sum(-1, keepdim=True)
    return probabilities


def _longest_shared(target: list[int], candidates: Sequence[list[int]]) -> tuple[int | None, int]:
    """The candidate that shares the longest prefix with `target` (its index, or None) and how long that prefix is."""
    best, shared = None, 0
    for index, candidate in enumerate(candidates):
        # most candidates part early (another instruction): a slice compare in C says so at once
        if shared and candidate[:shared + 1] != target[:shared + 1]:
            continue
        common = _common_prefix(candidate, target)
        if common > shared:
            best, shared = index, common
    return best, shared


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix, by bisection over slice compares (each a loop in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
