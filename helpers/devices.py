"""One decision for every model load and trainer: the device, the dtypes and the device_map.

The rules, in one place so the notebooks, the memory estimate and the tests agree:

- bf16 only with native support, compute capability 8.0 (Ampere) or newer. `torch.cuda.is_bf16_supported()`
  also counts emulation and says True on a T4 (7.5), where bf16 is slow and vLLM refuses it;
- below 8.0, fp16: weights for inference and vLLM are fp16, full training keeps fp32 weights under fp16
  autocast (fp16 weights cannot be trained with a gradient scaler), QLoRA computes in fp16;
- on a CPU with native bf16 instructions (avx512_bf16 or AMX), bf16: weights for inference are bf16, training
  keeps fp32 weights under bf16 autocast; measured on a 2-core avx512_bf16 machine, SmolLM2-135M's full SFT
  took 1083 s instead of 1438 s and decoding was 1.6x faster than in fp32. Without those instructions bf16 is emulated and slower: fp32 everywhere;
- `device_map`: None on a CPU; under a distributed launch (accelerate, torchrun) None too, because accelerate
  places each rank's copy, except for 4-bit models, which cannot be moved after loading and go to the rank's
  own GPU; in a single process "auto", which also splits a model too big for one GPU over several.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch

BF16_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class DevicePlan:
    """What this process runs on and how models are loaded and trained there."""

    gpu_count: int = 0
    capability: tuple[int, int] | None = None
    gpu_name: str | None = None
    world_size: int = 1
    local_rank: int = 0
    allow_bf16: bool = True
    cpu_bf16: bool = False  # the CPU has native bf16 instructions (`cpu_has_native_bf16`)

    @property
    def on_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def bf16(self) -> bool:
        """Native bf16: the trainers' `bf16=` flag."""
        if not self.on_gpu:
            return self.allow_bf16 and self.cpu_bf16
        return self.allow_bf16 and self.capability is not None and tuple(self.capability) >= BF16_MIN_CAPABILITY

    @property
    def fp16(self) -> bool:
        """fp16 autocast with a gradient scaler: the trainers' `fp16=` flag on GPUs without native bf16."""
        return self.on_gpu and not self.bf16

    @property
    def dtype(self) -> torch.dtype:
        """Weights for inference, merging and vLLM, and the compute dtype of 4-bit layers."""
        if not self.on_gpu:
            return torch.bfloat16 if self.bf16 else torch.float32
        return torch.bfloat16 if self.bf16 else torch.float16

    @property
    def train_dtype(self) -> torch.dtype:
        """Weights of a model that is fully trained: fp16 autocast needs fp32 master weights, and so does bf16
        autocast on a CPU (an optimizer step on bf16 weights there would lose the small updates)."""
        return torch.bfloat16 if self.bf16 and self.on_gpu else torch.float32

    @property
    def vllm_dtype(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def device_map(self, quantized: bool = False):
        if not self.on_gpu:
            return None
        if self.distributed:
            return {"": self.local_rank} if quantized else None
        return "auto"

    def load_kwargs(self, training: bool = False, quantized: bool = False) -> dict:
        """Keyword arguments for `from_pretrained`."""
        dtype = self.dtype if quantized or not training else self.train_dtype
        return {"dtype": dtype, "device_map": self.device_map(quantized)}

    def describe(self) -> str:
        if not self.on_gpu:
            where = "CPU"
        else:
            major, minor = self.capability or (0, 0)
            where = f"{self.gpu_count} x {self.gpu_name} (compute capability {major}.{minor})"
        if self.bf16:
            training = "bf16" if self.on_gpu else "bf16 autocast"
        else:
            training = "fp16 autocast" if self.fp16 else "fp32"
        text = f"{where}: weights {self.vllm_dtype}, training {training}"
        if self.distributed:
            text += f", rank {self.local_rank} of {self.world_size}"
        elif self.gpu_count > 1:
            text += (". Several GPUs in one process: GRPO refuses nn.DataParallel; train with `python -m "
                     "helpers.gpu.launch` or set CUDA_VISIBLE_DEVICES to one GPU")
        return text


def device_plan(allow_bf16: bool = True) -> DevicePlan:
    """The plan for this process, read from torch and from the variables a distributed launcher sets."""
    # Read the launcher's variables rather than accelerate's PartialState: creating that state here would fix
    # its backend before TrainingArguments(use_cpu=...) can choose gloo on a CPU.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.cuda.is_available():
        return DevicePlan(world_size=world_size, local_rank=local_rank, allow_bf16=allow_bf16,
                          cpu_bf16=cpu_has_native_bf16())
    index = local_rank if world_size > 1 else 0
    return DevicePlan(gpu_count=torch.cuda.device_count(), capability=torch.cuda.get_device_capability(index),
                      gpu_name=torch.cuda.get_device_name(index), world_size=world_size, local_rank=local_rank,
                      allow_bf16=allow_bf16)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16, or AMX tiles): read from the kernel's CPU flags, so
    a machine without them (or without /proc/cpuinfo, as macOS) keeps fp32."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def is_main_process() -> bool:
    """True in a single process and on rank 0 of a distributed launch."""
    return int(os.environ.get("RANK", "0")) == 0


def free_memory() -> None:
    """Return the memory of objects already deleted (`del trainer, model`) to the GPU before the next stage."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
