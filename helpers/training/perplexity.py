"""Perplexity of a model on what it is trained to write: the completions of step records, or the assistant
turns of episode chats (everything else is context only)."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def completion_perplexity(model, tokenizer, records: list[dict], batch_size: int = 8) -> float:
    """exp(mean negative log-likelihood per target token), records rendered with the chat template.

    Targets are a step record's completion, or every assistant turn of a `messages` record (which needs a
    chat template with generation markers, see helpers.training.models.templates).
    """
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(records), batch_size):
        batch_ids, batch_labels = [], []
        for record in records[start:start + batch_size]:
            ids, labels = _targets(tokenizer, record)
            batch_ids.append(ids)
            batch_labels.append(labels)
        width = max(len(ids) for ids in batch_ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch_ids], device=model.device)
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch_ids], device=model.device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for lab in batch_labels], device=model.device)
        targets = labels[:, 1:]
        scored = targets != -100
        # the output layer only where a token is scored (about half of an episode): the same logits there, a
        # fraction of the [positions, vocabulary] product and of its fp32 copy
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
        logits = model.get_output_embeddings()(hidden[scored]).float()
        loss = torch.nn.functional.cross_entropy(logits, targets[scored], reduction="sum")
        total_loss += loss.item()
        total_tokens += int(scored.sum())
    return math.exp(total_loss / max(total_tokens, 1))


def _targets(tokenizer, record: dict) -> tuple[list[int], list[int]]:
    """Token ids of a record and its labels (-100 where the model is not scored)."""
    if "messages" in record:
        encoded = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
        ids = list(encoded["input_ids"])
        return ids, [i if keep else -100 for i, keep in zip(ids, encoded["assistant_masks"])]
    prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    return ids, [-100] * len(prompt_ids) + ids[len(prompt_ids):]
