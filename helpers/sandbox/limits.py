"""The per-step limits of one sandboxed episode."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    step_wall_seconds: float = 3.0  # wall-clock per step
    step_cpu_seconds: float = 2.0  # CPU per step
    memory_mb: int = 512  # address space allowed above the worker's baseline
    api_calls_per_step: int = 100
    output_chars: int = 20_000  # captured stdout is truncated beyond this, with a note
    code_chars: int = 20_000  # longer code is refused
