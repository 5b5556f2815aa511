"""Benchmark: causal attention of training (forward + backward) at SmolLM2's shapes, PyTorch's CPU flash kernel
against the alternatives, in one run.

On the 2-core machine without AMX, attention's forward and backward take about a quarter of a full-SFT or LoRA
step (PyTorch's `_scaled_dot_product_flash_attention_for_cpu` and its backward, 9 and 22 ms per layer at 855
tokens). This times, per layer and one sequence of bf16 queries (9 heads) over keys and values (3 heads, 64
dims), each way of computing the same attention:
- `flash, grouped`: `scaled_dot_product_attention(is_causal=True, enable_gqa=True)`, what transformers calls;
- `flash, repeated`: the same kernel with the key and value heads repeated to 9 first;
- `products`: two products and a softmax over the whole square, the causal half masked (transformers' eager);
- `products in blocks of 128 queries`: each block only as far as its last key (the causal half skipped),
  the query heads that share a key head stacked;
- the blocks compiled by `torch.compile`: the loop over a length's blocks makes a graph per length (fast,
  but training would compile again for nearly every episode: each has its own length);
- a fixed number of blocks (6) compiled with `dynamic=True`: one graph for every length, which is what the
  compiled decoder layers of training could use.
Each figure is the median of `--repeats` calls after one warm-up; the largest difference from an fp64 reference
of the output and of the queries' gradient is printed beside it.

    python -m helpers.benchmarks.attention            # lengths 400, 855 (an average episode), 1200
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, DIM = 9, 3, 64  # SmolLM2-135M
GROUP = HEADS // KV_HEADS


def flash_grouped(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def flash_repeated(q, k, v):
    return F.scaled_dot_product_attention(q, k.repeat_interleave(GROUP, 1), v.repeat_interleave(GROUP, 1),
                                          is_causal=True)


def products(q, k, v):
    n = q.shape[2]
    scores = torch.matmul(q, k.repeat_interleave(GROUP, 1).transpose(2, 3)).float() * DIM ** -0.5
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1).to(q.dtype)
    return torch.matmul(weights, v.repeat_interleave(GROUP, 1))


def _block(q, k, v, start: int, end: int):
    """Attention of queries [start, end) over keys [0, end): the query heads of a key head stacked, one product."""
    rows = q[:, :, start:end].reshape(1, KV_HEADS, GROUP * (end - start), DIM)
    scores = torch.matmul(rows, k[:, :, :end].transpose(2, 3)).float() * DIM ** -0.5
    later = torch.arange(end)[None, :] > torch.arange(start, end)[:, None]
    scores = scores.view(1, KV_HEADS, GROUP, end - start, end).masked_fill(later, float("-inf"))
    weights = torch.softmax(scores, dim=-1).to(q.dtype).view(1, KV_HEADS, GROUP * (end - start), end)
    return torch.matmul(weights, v[:, :, :end]).view(1, HEADS, end - start, DIM)


def blocks(q, k, v, size: int = 128):
    n = q.shape[2]
    return torch.cat([_block(q, k, v, start, min(n, start + size)) for start in range(0, n, size)], 2)


def six_blocks(q, k, v, count: int = 6):
    """`blocks` with a fixed number of blocks, their bounds symbolic in the length: one compiled graph for all."""
    n = q.shape[2]
    return torch.cat([_block(q, k, v, b * n // count, (b + 1) * n // count) for b in range(count)], 2)


def time_one(attention, q, k, v, grad, repeats: int) -> tuple[float, float]:
    """Median seconds of the forward and of the backward."""
    forward, backward = [], []
    for call in range(repeats + 1):
        started = time.perf_counter()
        out = attention(q, k, v)
        middle = time.perf_counter()
        out.backward(grad)
        if call:  # the first call warms up (and compiles)
            forward.append(middle - started)
            backward.append(time.perf_counter() - middle)
        q.grad = k.grad = v.grad = None
    return statistics.median(forward), statistics.median(backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[400, 855, 1200])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    ways = {"flash, grouped (transformers)": flash_grouped, "flash, repeated": flash_repeated,
            "products": products, "products in blocks of 128 queries": blocks,
            "the blocks compiled, a graph per length": torch.compile(blocks, dynamic=True),
            "6 blocks compiled, one graph for every length": torch.compile(six_blocks, dynamic=True)}
    print(f"{torch.get_num_threads()} threads; per layer, one sequence, bf16; forward and backward in ms\n")
    print("| length | attention | forward | backward | total | against flash, grouped | output error | "
          "dq error |\n|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for n in args.lengths:
        q = torch.randn(1, HEADS, n, DIM).to(torch.bfloat16).requires_grad_()
        k = torch.randn(1, KV_HEADS, n, DIM).to(torch.bfloat16).requires_grad_()
        v = torch.randn(1, KV_HEADS, n, DIM).to(torch.bfloat16).requires_grad_()
        grad = torch.randn(1, HEADS, n, DIM).to(torch.bfloat16)
        exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
        reference = F.scaled_dot_product_attention(*exact, is_causal=True, enable_gqa=True)
        reference.backward(grad.double())
        base = None
        for name, attention in ways.items():
            out = attention(q, k, v)
            out.backward(grad)
            errors = ((out.double() - reference).abs().max().item(),
                      (q.grad.double() - exact[0].grad).abs().max().item())
            q.grad = k.grad = v.grad = None
            forward, backward = time_one(attention, q, k, v, grad, args.repeats)
            total = forward + backward
            base = base or total
            print(f"| {n} | {name} | {1e3 * forward:.1f} | {1e3 * backward:.1f} | {1e3 * total:.1f} | "
                  f"{base / total:.2f}x | {errors[0]:.4f} | {errors[1]:.4f} |", flush=True)


if __name__ == "__main__":
    main()
