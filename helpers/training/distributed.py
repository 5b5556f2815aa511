"""What the training notebooks do differently when `helpers.gpu.launch` runs them on several processes.

In a single process (Jupyter, papermill) both functions do what the notebook did before: save the trained
model, and evaluate the model in memory.
"""
from __future__ import annotations

from pathlib import Path


def save_trained(trainer, tokenizer, directory: str | Path) -> None:
    """Save the trained model and its tokenizer. Every rank must call it: with FSDP or ZeRO-3 the weights
    are gathered from all of them into one ordinary checkpoint; the files are written once."""
    trainer.save_model(str(directory))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(directory))
    trainer.accelerator.wait_for_everyone()


def evaluation_model(trainer, directory: str | Path, plan=None):
    """The trained model for the main process to evaluate alone: the one in memory, unless its weights are
    sharded over the ranks (FSDP, ZeRO-3), in which case the checkpoint `save_trained` wrote, on this GPU.

    Either way in the dtype 05/06 load models in (`plan.dtype`, the notebook's `device`): a model trained with fp32
    weights under mixed precision loses its autocast wrapper and is cast, so generation's cache and the keys agree
    in dtype."""
    from accelerate.utils import DistributedType

    from helpers.devices import device_plan
    from helpers.training.models import load_trained

    plan = plan or device_plan()
    if trainer.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return load_trained(directory, plan)[0]
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return model.to(plan.dtype)
