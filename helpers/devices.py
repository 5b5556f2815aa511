"""One decision for every model load and trainer: the device, the dtypes and the device_map.

The rules, in one place so the notebooks, the memory estimate and the tests agree:

- bf16 only with native support, compute capability 8.0 (Ampere) or newer. `torch.cuda.is_bf16_supported()`
  also counts emulation and says True on a T4 (7.5), where bf16 is slow and vLLM refuses it;
- below 8.0, fp16: weights for inference and vLLM are fp16, QLoRA computes in fp16;
- a model that is fully trained keeps fp32 master weights everywhere, under bf16 autocast (GPUs from 8.0, CPUs
  with native bf16) or fp16 autocast (a T4): an optimizer step on bf16 weights loses the small updates, and fp16
  weights cannot be trained with a gradient scaler;
- on a CPU with native bf16 instructions (avx512_bf16 or AMX), bf16: weights for inference are bf16, training
  keeps fp32 weights under bf16 autocast; measured on a 2-core avx512_bf16 machine, SmolLM2-135M's full SFT
  took 1083 s instead of 1438 s and decoding was 1.6x faster than in fp32. Without those instructions bf16 is emulated and slower: fp32 everywhere;
- `HELPERS_PRECISION=fp32` in the environment keeps everything in fp32 (no autocast): the fallback for a small
  model that overflows in fp16 on a T4 (Qwen2.5 does), at about twice the memory;
- `device_map`: None on a CPU; under a distributed launch (accelerate, torchrun) None for a model the trainer
  trains, because accelerate places (or shards) each rank's copy, and the rank's own GPU for every other load
  (4-bit models, which cannot be moved after loading, frozen bases, merging, evaluation); in a single process
  "auto", which also splits a model too big for one GPU over several.

A profile whose name starts with `gpu-` never falls back to the CPU: `device_plan(profile=...)` stops with one
sentence saying why torch sees no GPU.
"""
from __future__ import annotations

import gc
import os
import subprocess
from dataclasses import dataclass

import torch

BF16_MIN_CAPABILITY = (8, 0)
PRECISION_VARIABLE = "HELPERS_PRECISION"
PRECISIONS = ("auto", "fp32")
GPU_PROFILE_PREFIX = "gpu-"
# The oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA compatibility table: 12.x with
# minor-version compatibility from 525.60.13, 13.x from 580.65.06).
MIN_DRIVER_FOR_CUDA = {11: (450, 80), 12: (525, 60), 13: (580, 65)}


class NoGPUError(RuntimeError):
    """A GPU profile runs where torch sees no GPU; the message says why and what to do, in one sentence."""


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
    fp32_only: bool = False  # HELPERS_PRECISION=fp32: no bf16, no fp16 anywhere

    @property
    def on_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> str:
        """Where this process's models live: its rank's GPU under a launch, else the first GPU or the CPU."""
        if not self.on_gpu:
            return "cpu"
        return f"cuda:{self.local_rank}" if self.distributed else "cuda"

    @property
    def bf16(self) -> bool:
        """Native bf16: the trainers' `bf16=` flag."""
        if self.fp32_only or not self.allow_bf16:
            return False
        if not self.on_gpu:
            return self.cpu_bf16
        return self.capability is not None and tuple(self.capability) >= BF16_MIN_CAPABILITY

    @property
    def fp16(self) -> bool:
        """fp16 autocast with a gradient scaler: the trainers' `fp16=` flag on GPUs without native bf16."""
        return self.on_gpu and not self.bf16 and not self.fp32_only

    @property
    def dtype(self) -> torch.dtype:
        """Weights for inference, merging and vLLM, and the compute dtype of 4-bit layers."""
        if self.bf16:
            return torch.bfloat16
        return torch.float16 if self.fp16 else torch.float32

    @property
    def train_dtype(self) -> torch.dtype:
        """Weights of a model that is fully trained: fp32 master weights under any autocast (module docstring)."""
        return torch.float32

    @property
    def vllm_dtype(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def device_map(self, quantized: bool = False, training: bool = False):
        if not self.on_gpu:
            return None
        if self.distributed:
            # accelerate places (FSDP and ZeRO-3 shard) what the trainer trains; every other load would stay on
            # the CPU without a map, so it goes to this rank's GPU
            return None if training and not quantized else {"": self.local_rank}
        return "auto"

    def load_kwargs(self, training: bool = False, quantized: bool = False) -> dict:
        """Keyword arguments for `from_pretrained`."""
        dtype = self.dtype if quantized or not training else self.train_dtype
        return {"dtype": dtype, "device_map": self.device_map(quantized, training)}

    def describe(self) -> str:
        if not self.on_gpu:
            where = "CPU"
        else:
            major, minor = self.capability or (0, 0)
            where = f"{self.gpu_count} x {self.gpu_name} (compute capability {major}.{minor})"
        if self.bf16:
            training = "fp32 weights under bf16 autocast"
        else:
            training = "fp32 weights under fp16 autocast" if self.fp16 else "fp32"
        text = f"{where}: weights {self.vllm_dtype}, training {training}"
        if self.fp32_only:
            text += f" ({PRECISION_VARIABLE}=fp32)"
        if self.distributed:
            text += f", rank {self.local_rank} of {self.world_size}"
        elif self.gpu_count > 1:
            text += (". Several GPUs in one process: GRPO refuses nn.DataParallel; train with `python -m "
                     "helpers.gpu.launch` or set CUDA_VISIBLE_DEVICES to one GPU")
        return text


def requires_gpu(profile: str | None) -> bool:
    return bool(profile) and profile.startswith(GPU_PROFILE_PREFIX)


def requested_precision() -> str:
    value = os.environ.get(PRECISION_VARIABLE, "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise ValueError(f"{PRECISION_VARIABLE} is '{value}': set it to one of {', '.join(PRECISIONS)}, or unset it.")
    return value


def device_plan(allow_bf16: bool = True, profile: str | None = None) -> DevicePlan:
    """The plan for this process, read from torch and from the variables a distributed launcher sets; for a GPU
    profile (`gpu-*`), NoGPUError instead of a CPU plan."""
    # Read the launcher's variables rather than accelerate's PartialState: creating that state here would fix
    # its backend before TrainingArguments(use_cpu=...) can choose gloo on a CPU.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    fp32_only = requested_precision() == "fp32"
    if not torch.cuda.is_available():
        if requires_gpu(profile):
            raise NoGPUError(f"Profile {profile} trains on a CUDA GPU, and {why_no_gpu()}.")
        return DevicePlan(world_size=world_size, local_rank=local_rank, allow_bf16=allow_bf16,
                          cpu_bf16=cpu_has_native_bf16(), fp32_only=fp32_only)
    index = local_rank if world_size > 1 else 0
    return DevicePlan(gpu_count=torch.cuda.device_count(), capability=torch.cuda.get_device_capability(index),
                      gpu_name=torch.cuda.get_device_name(index), world_size=world_size, local_rank=local_rank,
                      allow_bf16=allow_bf16, fp32_only=fp32_only)


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version as nvidia-smi reports it ("570.124.06"), or None where there is no driver or
    no GPU."""
    try:
        run = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = run.stdout.strip().splitlines()[:1]
    if run.returncode != 0 or not first or not first[0].strip().split(".")[0].isdigit():
        return None
    return first[0].strip()


def why_no_gpu() -> str:
    """Why torch sees no GPU, with what to do, as the second half of a sentence (read from torch and nvidia-smi)."""
    built_for = torch.version.cuda
    if built_for is None:
        return (f"the installed torch {torch.__version__} is a CPU-only build: install a CUDA build "
                f"(`pip install -r requirements-gpu.txt`; on Colab the set-up cell keeps Colab's own torch)")
    driver = nvidia_driver_version()
    if driver is None:
        return ("no NVIDIA GPU is visible (nvidia-smi finds none): on Colab choose Runtime > Change runtime type > "
                "a GPU, elsewhere check the driver and CUDA_VISIBLE_DEVICES, or run a cpu- profile")
    needed = MIN_DRIVER_FOR_CUDA.get(int(built_for.split(".")[0]))
    shown = driver
    release = tuple(int(part) for part in driver.split(".")[:2] if part.isdigit())
    if needed is not None and release < needed:
        return (f"torch {torch.__version__} is built for CUDA {built_for}, which needs NVIDIA driver "
                f"{needed[0]}.{needed[1]} or newer, and this machine has {shown}: install a torch built for the "
                f"driver's CUDA (on Colab the set-up cell keeps Colab's own torch) or update the driver")
    return (f"torch {torch.__version__} (CUDA {built_for}) cannot use the GPU beside driver {shown}: check "
            f"CUDA_VISIBLE_DEVICES and that no other process holds the GPU, then restart Python")


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
