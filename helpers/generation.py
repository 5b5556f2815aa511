"""Greedy generation for many chats at once with transformers: left padding, one batch at a time."""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm


@torch.no_grad()
def generate_replies(model, tokenizer, chats: Sequence[list[dict]], max_new_tokens: int = 256, batch_size: int = 16,
                     progress: bool = False, desc: str = "generating") -> list[str]:
    """The model's greedy reply to each chat (rendered with the tokenizer's chat template)."""
    texts = [tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True) for chat in chats]
    # sorting by length keeps padding small inside a batch; results are put back in input order
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies: list[str] = [""] * len(texts)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    model.eval()
    try:
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc=desc, disable=not progress):
            indices = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in indices], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            for i, ids in zip(indices, new_tokens):
                replies[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = padding_side
    return replies
