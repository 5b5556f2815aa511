"""The GPU choices a profile makes (inference backend, vLLM mode and sizes), checked with one sentence per mistake.

TRL checks `vllm_mode` only once vLLM starts, on a GPU, so a misspelt value would surface after the model
has loaded; checking here stops it before anything runs.
"""
from __future__ import annotations

INFERENCE_BACKENDS = ("transformers", "vllm")
VLLM_MODES = ("colocate", "server")  # GRPOConfig.vllm_mode: in the training process, or a `vllm serve` server


class SettingsError(ValueError):
    """A GPU setting has a value that cannot work; the message says which and what to write instead."""


def check_gpu_settings(inference_backend: str = "transformers", vllm_mode: str = "colocate",
                       vllm_tensor_parallel_size: int = 1, vllm_gpu_memory_utilization: float = 0.3,
                       **_unused) -> None:
    """Raise SettingsError for the first value that cannot work; other profile values are ignored."""
    if inference_backend not in INFERENCE_BACKENDS:
        raise SettingsError(f"inference_backend is '{inference_backend}': write one of {', '.join(INFERENCE_BACKENDS)}.")
    if vllm_mode not in VLLM_MODES:
        raise SettingsError(f"vllm_mode is '{vllm_mode}': write one of {', '.join(VLLM_MODES)}.")
    if not isinstance(vllm_tensor_parallel_size, int) or isinstance(vllm_tensor_parallel_size, bool) \
            or vllm_tensor_parallel_size < 1:
        raise SettingsError(f"vllm_tensor_parallel_size is {vllm_tensor_parallel_size!r}: write a whole number of "
                            f"GPUs, 1 or more.")
    if not isinstance(vllm_gpu_memory_utilization, (int, float)) or not 0 < vllm_gpu_memory_utilization <= 1:
        raise SettingsError(f"vllm_gpu_memory_utilization is {vllm_gpu_memory_utilization!r}: write the share of "
                            f"the GPU vLLM may take, above 0 and at most 1.")
