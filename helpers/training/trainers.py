"""Training helpers shared by the notebooks: a CPU-friendly loss path for TRL's SFTTrainer, GRPO's starting model."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from trl import SFTTrainer


class ScoredLogitsSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss projects through the LM head only the positions that have a label.

    TRL computes the loss through a chunked, fused LM head: a memory saving on GPUs with large
    vocabularies, but a Python loop of small tiles on a CPU, where it also scores every position. Here
    the backbone's hidden states are projected in one matmul, and only where the next token is trained
    (the assistant's turns): SmolLM2's 49,152-word head is a fifth of the model's arithmetic, and about
    half of an episode's tokens are prompt, system turn or code output. The loss is the same number
    (TRL's and transformers' token-mean cross-entropy); the logits of the other positions are not made.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)  # SFTTrainer's collator always gives labels (-100 where nothing is trained)
        labels = inputs.pop("labels")
        targets = labels[:, 1:]
        scored = torch.zeros_like(labels, dtype=torch.bool)
        scored[:, :-1] = targets != -100  # position t predicts token t + 1
        # a boolean mask keeps the True positions of every row, flattened in row order: [scored, vocab]
        outputs = model(**inputs, logits_to_keep=scored, use_cache=False)
        total = nn.functional.cross_entropy(outputs.logits.float(), targets[targets != -100], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else scored.sum()
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # as Trainer.compute_loss: the token count is every rank's, and DDP averages the gradients over ranks
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


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
