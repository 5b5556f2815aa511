"""Training helpers shared by the notebooks: a CPU-friendly loss path for TRL's SFTTrainer, GRPO's starting model."""
from __future__ import annotations

import json
from contextlib import contextmanager
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

    `compile_layers=True` runs `train()` with every decoder layer compiled by `torch.compile` (see
    `compiled_layers`): the same arithmetic with the layer's small element-wise operations (norms, rotary
    embedding, casts of autocast, SiLU) fused, which on a CPU cost as much as the matrix products.
    """

    def __init__(self, *args, compile_layers: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.compile_layers = compile_layers
        # compiled, the cast to fp32, log-softmax and its backward are one pass over the [positions, vocabulary]
        # logits instead of five fp32 copies of them
        self.summed_cross_entropy = (torch.compile(summed_cross_entropy, dynamic=True) if compile_layers
                                     else summed_cross_entropy)

    def train(self, *args, **kwargs):
        if not self.compile_layers:
            return super().train(*args, **kwargs)
        with compiled_layers(self.model):
            return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)  # SFTTrainer's collator always gives labels (-100 where nothing is trained)
        labels = inputs.pop("labels")
        targets = labels[:, 1:]
        scored = torch.zeros_like(labels, dtype=torch.bool)
        scored[:, :-1] = targets != -100  # position t predicts token t + 1
        # a boolean mask keeps the True positions of every row, flattened in row order: [scored, vocab]
        outputs = model(**inputs, logits_to_keep=scored, use_cache=False)
        total = self.summed_cross_entropy(outputs.logits, targets[targets != -100])
        count = num_items_in_batch if num_items_in_batch is not None else scored.sum()
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # as Trainer.compute_loss: the token count is every rank's, and DDP averages the gradients over ranks
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed token cross-entropy, computed in fp32 whatever the logits' dtype (as transformers' loss)."""
    return nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers causal LM (its `layers` list), also under a PEFT wrapper."""
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, nn.ModuleList) and len(module) > 0:
            return list(module)
    raise ValueError(f"{type(model).__name__} has no list of decoder layers to compile.")


@contextmanager
def compiled_layers(model: nn.Module):
    """Each decoder layer compiled by `torch.compile` inside the block, the plain layers again after it.

    Regional compilation: the layers run the same code, so one graph (with dynamic sequence length: every
    episode has its own) serves them all and compiles once, where compiling the whole model would trace all 30
    layers. The embedding, the LM head and the loss stay eager. After the block, generation and saving see the
    plain modules (the weights are the same tensors throughout).
    """
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    try:
        yield model
    finally:
        for layer in layers:
            layer._compiled_call_impl = None  # what nn.Module.compile set: calls go to forward again


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
