"""A copy circuit written into a fresh model: a previous-token head and an induction head.

An agent must carry names and amounts from the instruction into its code. Language models do that
with *induction heads* (Olsson et al., 2022): a head in one layer writes "the token before me" into
each position, and a head in the next layer looks for the position whose previous token equals the
current token and copies the token found there. Pretraining grows them only after billions of
tokens; a few minutes on a CPU give none (the copy test in `tiny.py` measures it). So the cpu-tiny
build starts from weights that already implement the two heads, then pretrains everything as usual.

Layer `layers[0]`, the query heads of one key/value group: a constant query and key (biases only)
whose rotary score peaks at distance 1, so each position attends to the one before it; its value and
output copy the previous token's embedding (a 1/4 slice of it) into a spare subspace V of the residual.
Layer `layers[1]`: the query reads the current token's slice, the key reads the copy in V, both in the
slowest rotary frequencies (where distance barely matters), so the head attends to "the position after
the last occurrence of my token"; its value and output add that position's token to the residual, which
the tied output layer turns into a high logit for it. Every weight stays trainable.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def plant_copy_circuit(model, seed: int = 0, layers: tuple[int, int] = (0, 1), kv_group: int = 0,
                       sharpness: float = 40.0, copy_scale: float = 0.2, match_scale: float = 6.0,
                       output_scale: float = 3.0, final_gain: float = 3.0):
    """Write a previous-token head and an induction head into a Qwen2/Llama-style model, in place."""
    config = model.config
    hidden, head_dim = config.hidden_size, config.hidden_size // config.num_attention_heads
    half = head_dim // 2
    per_group = config.num_attention_heads // config.num_key_value_heads
    if config.num_hidden_layers < 2 or 2 * head_dim > hidden:
        raise ValueError("A copy circuit needs at least two layers and a head no wider than half the model.")
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator))
    source, spare = basis[:, :head_dim], basis[:, head_dim:2 * head_dim]  # token slice, and where its copy goes
    inv_freq = model.model.rotary_emb.inv_freq
    heads = [kv_group * per_group + i for i in range(per_group)]
    kv = slice(kv_group * head_dim, (kv_group + 1) * head_dim)

    def reset(attention):
        attention.k_proj.weight[kv] = 0
        attention.v_proj.weight[kv] = 0
        for bias in (attention.k_proj.bias, attention.v_proj.bias):
            if bias is not None:
                bias[kv] = 0
        for h in heads:
            rows = slice(h * head_dim, (h + 1) * head_dim)
            attention.q_proj.weight[rows] = 0
            if attention.q_proj.bias is not None:
                attention.q_proj.bias[rows] = 0
            attention.o_proj.weight[:, rows] = 0

    # previous-token head: score(d) = sharpness * sum_j cos(f_j (d - 1)) over the fastest frequencies
    previous = model.model.layers[layers[0]].self_attn
    if previous.q_proj.bias is None or previous.k_proj.bias is None:
        raise ValueError("The previous-token head needs query and key biases (Qwen2 has them).")
    reset(previous)
    for j in range(min(8, half)):
        angle = inv_freq[j]
        previous.k_proj.bias[kv.start + j] = 1.0
        for h in heads:
            previous.q_proj.bias[h * head_dim + j] = sharpness * torch.cos(angle)
            previous.q_proj.bias[h * head_dim + j + half] = -sharpness * torch.sin(angle)
    previous.v_proj.weight[kv] = source.T
    previous.o_proj.weight[:, heads[0] * head_dim:(heads[0] + 1) * head_dim] = copy_scale * spare

    # induction head: match the current token against the previous-token copy, in the slowest frequencies
    induction = model.model.layers[layers[1]].self_attn
    reset(induction)
    slow = list(range(half - min(8, half), half))
    dims = slow + [j + half for j in slow]
    mix, _ = torch.linalg.qr(torch.randn(head_dim, len(dims), generator=generator))
    induction.k_proj.weight[[kv.start + d for d in dims]] = match_scale * mix.T @ spare.T
    for h in heads:
        induction.q_proj.weight[[h * head_dim + d for d in dims]] = match_scale * mix.T @ source.T
    induction.v_proj.weight[kv] = source.T
    induction.o_proj.weight[:, heads[0] * head_dim:(heads[0] + 1) * head_dim] = output_scale * source
    # small initial embeddings bound every logit to a few nats; a larger final gain lets a copy stand out
    model.model.norm.weight.mul_(final_gain)
    return model
