"""Training helpers shared by the notebooks: a CPU-friendly loss path for TRL's SFTTrainer, GRPO's starting model."""
from __future__ import annotations

import json
from pathlib import Path

from transformers import Trainer
from trl import SFTTrainer


class FullLogitsSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss comes from the model's full logits in one matmul.

    TRL computes the loss through a chunked, fused LM head that never builds the full logits: a
    memory saving on GPUs with large vocabularies, but a Python loop of small tiles on a CPU. For
    small vocabularies the plain cross-entropy is the same loss (same numbers), computed faster.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


TRAINED_FOLDERS = {"sft_full": "sft_full", "lora": "lora_merged"}


def pick_start_model(models_root: Path, choice: str = "best") -> tuple[str, Path]:
    """The SFT model GRPO starts from: `sft_full`, `lora`, or `best` (the higher greedy dev action match
    recorded by 02/03; full SFT on a tie or when LoRA was not trained)."""
    if choice not in (*TRAINED_FOLDERS, "best"):
        raise ValueError(f"Unknown GRPO start {choice!r}: choose sft_full, lora or best.")
    found = {name: Path(models_root) / folder for name, folder in TRAINED_FOLDERS.items()
             if (Path(models_root) / folder / "config.json").exists()}
    if not found:
        raise FileNotFoundError(f"No SFT model in {models_root}: run 02_sft_full (or 03_sft_lora) first.")
    if choice != "best":
        if choice not in found:
            raise FileNotFoundError(f"No {choice} model in {models_root}: run the notebook that trains it first.")
        return choice, found[choice]
    scores = {name: _dev_match(path) for name, path in found.items()}
    name = max(found, key=lambda n: (scores[n], n == "sft_full"))
    return name, found[name]


def _dev_match(path: Path) -> float:
    try:
        return float(json.loads((path / "training_metadata.json").read_text())["dev_action_match_pct"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1.0
