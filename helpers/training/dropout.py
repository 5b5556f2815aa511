"""Dropout for CPU training whose masks numpy draws on every core: the same inverted dropout as `nn.Dropout`.

Each value is kept with probability 1 - p and scaled by 1 / (1 - p), as `nn.Dropout` does; only the random
numbers come from elsewhere. PyTorch draws a CPU dropout mask one value at a time under its generator's lock
(outside Intel CPUs, where it takes MKL's path), and LoRA puts a dropout before each of the 210 adapters of
SmolLM2: on the 2-core AMD machine those draws were 18% of a LoRA step (docs/benchmarks-speed.md). Here
numpy's PCG64 fills the mask in 8 fixed slices on a thread pool (numpy releases the GIL while it fills), so
the masks do not depend on the number of threads, and each call's seed comes from torch's generator, so
`set_seed` repeats them. The draws differ from `nn.Dropout`'s: a run is another draw of the same training.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

SLICES = 8  # fixed: the masks are the same whatever the number of threads
_pool: ThreadPoolExecutor | None = None


def _fill(job) -> None:
    generator, draws, scale, threshold = job
    generator.random(out=draws, dtype=np.float32)
    np.multiply(draws >= threshold, scale, out=draws)


def dropout_scale(shape: tuple[int, ...], p: float, seed: int) -> torch.Tensor:
    """A float32 tensor of `shape` holding 1 / (1 - p) where a value is kept (probability 1 - p) and 0 elsewhere."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=torch.get_num_threads())
    count = int(np.prod(shape))
    draws = np.empty(count, dtype=np.float32)
    generators = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(SLICES)]
    bounds = [count * i // SLICES for i in range(SLICES + 1)]
    scale = np.float32(1.0 / (1.0 - p))
    list(_pool.map(_fill, [(g, draws[a:b], scale, np.float32(p)) for g, a, b in zip(generators, bounds, bounds[1:])]))
    return torch.from_numpy(draws).view(shape)


class NumpyDropout(nn.Module):
    """`nn.Dropout(p)` on CPU tensors with numpy's masks; on other devices, and outside training, `nn.Dropout`."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, self.training)
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))  # torch's generator: set_seed repeats the masks
        return x * dropout_scale(tuple(x.shape), self.p, seed).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_numpy_dropout(model: nn.Module) -> int:
    """Every `nn.Dropout` with p > 0 inside `model` (LoRA's `lora_dropout`) replaced by `NumpyDropout(p)`; the
    number replaced. For CPU training only: on a GPU PyTorch's fused dropout is the fast one."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, NumpyDropout(child.p))
                replaced += 1
    return replaced
