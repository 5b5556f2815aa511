"""Benchmark: what this machine can do at most, the yardstick every other speed figure is a share of.

`python -m helpers.benchmarks.limits` measures, in one run, the matrix-product rate in bf16 and fp32 (a 2048²
product and the shapes SmolLM2-135M's training and decoding multiply) and the memory bandwidth (reading a tensor,
copying one), for a block that stays in the last-level cache and one well beyond it. Other benchmarks call
`measure_limits()` in their own run and divide by it: model FLOP utilisation for training, tokens/s against the
bandwidth bound for decoding.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

# SmolLM2-135M: hidden 576, MLP 1536, 9 query and 3 key/value heads of 64, vocabulary 49,152.
HIDDEN, MLP, KV, VOCAB = 576, 1536, 192, 49152
# (m, k, n) of m×k @ k×n; 640 tokens is about one episode (204,698 tokens / 312 episodes = 656)
TRAINING_SHAPES = {
    "q/o projection 640×576×576": (640, 576, 576),
    "k/v projection 640×576×192": (640, 576, KV),
    "gate/up projection 640×576×1536": (640, 576, MLP),
    "down projection 640×1536×576": (640, MLP, HIDDEN),
    "weight gradient 576×640×1536": (HIDDEN, 640, MLP),
    "LM head, trained positions 350×576×49152": (350, HIDDEN, VOCAB),
}
DECODE_SHAPES = {
    "decode, 1 sequence 1×576×1536": (1, 576, MLP),
    "decode, 32 sequences 32×576×1536": (32, 576, MLP),
}
SQUARE = 2048
L3_BYTES = 480 * 2**20  # lscpu on this machine; read from sysfs when it can be
CACHED_BYTES = 64 * 2**20  # a block well inside the last-level cache (its size is read below)
BEYOND_CACHE_FACTOR = 4  # a block this many times the last-level cache


@dataclass
class MachineLimits:
    """The measured ceilings of this process's CPU threads (GFLOP/s, GB/s)."""

    threads: int
    bf16_gflops: float  # a 2048² product
    fp32_gflops: float
    read_gbs: float  # beyond the last-level cache: what a model bigger than the cache gets
    copy_gbs: float  # bytes read + bytes written, beyond the cache
    read_gbs_cached: float
    copy_gbs_cached: float
    cache_bytes: int
    block_bytes: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)  # name -> {"bf16": GFLOP/s, "fp32": GFLOP/s}

    def mfu(self, flops_per_s: float) -> float:
        """A training or inference rate as a share of the bf16 matrix rate."""
        return flops_per_s / (self.bf16_gflops * 1e9)

    def decode_bound_tokens_per_s(self, bytes_per_step: float, sequences: int = 1) -> float:
        """The most tokens/s a decoder can make if each step has to read `bytes_per_step` (the weights, plus the
        cache) from memory beyond the cache: `sequences` tokens per step."""
        return sequences * self.read_gbs * 1e9 / bytes_per_step


def last_level_cache_bytes(cache_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The largest cache this CPU reports (sysfs), or the 480 MB this machine's lscpu shows."""
    sizes = []
    for index in range(8):
        try:
            text = open(f"{cache_dir}/index{index}/size", encoding="ascii").read().strip()
        except OSError:
            break
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=L3_BYTES)


def _best_seconds(run, repeats: int, budget_s: float) -> float:
    """The fastest of a few timed runs (the machine is shared: the fastest is the least disturbed) after a warm-up."""
    run()
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats or (time.perf_counter() < deadline and len(times) < 10 * repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    return min(times)


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype = torch.bfloat16, repeats: int = 5,
                  budget_s: float = 1.0) -> float:
    """GFLOP/s of an m×k @ k×n product (2·m·k·n operations) in `dtype`, as `x @ w` with contiguous operands."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(dtype)
    b = torch.randn(k, n, generator=generator).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    # enough products per timing that a small shape is not all call overhead
    inner = max(1, int(2e9 / (2 * m * k * n)))

    def run():
        for _ in range(inner):
            torch.mm(a, b, out=out)

    return 2 * m * k * n * inner / _best_seconds(run, repeats, budget_s) / 1e9


def read_gbs(nbytes: int, repeats: int = 5, budget_s: float = 1.0) -> float:
    """GB/s of summing an fp32 tensor of `nbytes` (one read of every byte)."""
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    inner = max(1, int(1e9 // nbytes))

    def run():
        for _ in range(inner):
            x.sum()

    return nbytes * inner / _best_seconds(run, repeats, budget_s) / 1e9


def copy_gbs(nbytes: int, repeats: int = 5, budget_s: float = 1.0) -> float:
    """GB/s of copying a tensor of `nbytes` into another, counting the bytes read and the bytes written."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    inner = max(1, int(1e9 // nbytes))

    def run():
        for _ in range(inner):
            dst.copy_(src)

    return 2 * nbytes * inner / _best_seconds(run, repeats, budget_s) / 1e9


def measure_limits(shapes: bool = True, budget_s: float = 1.0) -> MachineLimits:
    """Measure this process's ceilings now, with its current thread count (a few seconds; ~20 with the shapes)."""
    cache = last_level_cache_bytes()
    cached = min(CACHED_BYTES, cache // 4)
    beyond = BEYOND_CACHE_FACTOR * cache
    by_shape = {}
    if shapes:
        for name, (m, k, n) in {**TRAINING_SHAPES, **DECODE_SHAPES}.items():
            by_shape[name] = {str(dtype).removeprefix("torch."): matmul_gflops(m, k, n, dtype, budget_s=budget_s)
                              for dtype in (torch.bfloat16, torch.float32)}
    return MachineLimits(
        threads=torch.get_num_threads(),
        bf16_gflops=matmul_gflops(SQUARE, SQUARE, SQUARE, torch.bfloat16, budget_s=budget_s),
        fp32_gflops=matmul_gflops(SQUARE, SQUARE, SQUARE, torch.float32, budget_s=budget_s),
        read_gbs=read_gbs(beyond, budget_s=budget_s), copy_gbs=copy_gbs(beyond, budget_s=budget_s),
        read_gbs_cached=read_gbs(cached, budget_s=budget_s), copy_gbs_cached=copy_gbs(cached, budget_s=budget_s),
        cache_bytes=cache, block_bytes={"cached": cached, "beyond_cache": beyond}, shapes=by_shape,
    )


def describe(limits: MachineLimits) -> str:
    """The limits as a short Markdown report."""
    mb = 2**20
    lines = [
        f"{limits.threads} threads, last-level cache {limits.cache_bytes / mb:,.0f} MB "
        f"(load average {os.getloadavg()[0]:.2f})",
        "",
        "| measure | bf16 | fp32 |", "|---|---|---|",
        f"| matrix product {SQUARE}² (GFLOP/s) | {limits.bf16_gflops:,.0f} | {limits.fp32_gflops:,.0f} |",
    ]
    lines += [f"| {name} (GFLOP/s) | {rates['bfloat16']:,.0f} | {rates['float32']:,.0f} |"
              for name, rates in limits.shapes.items()]
    cached, beyond = limits.block_bytes["cached"] / mb, limits.block_bytes["beyond_cache"] / mb
    lines += [
        "", "| memory | GB/s |", "|---|---|",
        f"| read, {cached:,.0f} MB block (inside the cache) | {limits.read_gbs_cached:,.1f} |",
        f"| copy, {cached:,.0f} MB block (inside the cache; read + write bytes) | {limits.copy_gbs_cached:,.1f} |",
        f"| read, {beyond:,.0f} MB block (beyond the cache) | {limits.read_gbs:,.1f} |",
        f"| copy, {beyond:,.0f} MB block (beyond the cache; read + write bytes) | {limits.copy_gbs:,.1f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-shapes", action="store_true", help="only the 2048² product and the bandwidth")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    limits = measure_limits(shapes=not args.no_shapes)
    print(describe(limits))
    if args.json:
        import json

        print(json.dumps(asdict(limits)))


if __name__ == "__main__":
    main()
