"""Training helpers shared by the SFT notebooks: a CPU-friendly loss path for TRL's SFTTrainer."""
from __future__ import annotations

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
