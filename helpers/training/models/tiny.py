"""The cpu-tiny base model: a small Qwen2 with its own tokenizer, pretrained briefly on Python's standard library.

Everything is built offline and deterministically from a seed: a byte-level BPE tokenizer with
ChatML special tokens and single-digit number tokens, then a few minutes of next-token
pretraining on the standard library's sources and docstrings (generic text, not the task
trajectories), so that "base" is a real, if small, language model.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments, set_seed,
)

from helpers.metadata import library_versions

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MARKER = "build.json"  # written last: a folder without it is an unfinished build
RECIPE_VERSION = 2  # raise when the tokenizer or pretraining recipe changes: older caches are rebuilt


@dataclass(frozen=True)
class TinyModelSpec:
    """Size of the model and of its brief pretraining; profiles set these."""

    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    vocab_size: int = 4096
    max_position_embeddings: int = 1024
    corpus_chars: int = 4_000_000
    pretrain_steps: int = 600
    pretrain_block: int = 256
    pretrain_batch: int = 16
    pretrain_lr: float = 2e-3
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict | None) -> "TinyModelSpec":
        params = dict(params or {})
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown tiny_model setting(s) {', '.join(sorted(unknown))}: "
                             f"choose from {', '.join(cls.__dataclass_fields__)}.")
        return cls(**params)


def stdlib_corpus(max_chars: int) -> list[str]:
    """Python standard library sources, in a fixed order, up to max_chars: generic code and prose."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skipped = {"test", "tests", "idlelib", "site-packages", "lib2to3", "ensurepip", "turtledemo"}
    texts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if skipped & set(path.relative_to(root).parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return texts


# Pieces BPE may merge within, never across: a word with its leading space, one digit (numbers copy
# digit by digit), a run of punctuation, a JSON escape such as \n or \", or whitespace. Identifiers
# keep their underscores, so `access_token` or `show_balance` can become one token.
PRE_TOKENIZER_PATTERN = r'\\[nt"\\]| ?[A-Za-z_]+| ?\d| ?[^\sA-Za-z_\d\\]+|\s+(?!\S)|\s+|\\'


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with ChatML special tokens, a chat template and single-digit tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  max_token_length=24, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, model_max_length=10**6)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _blocks(tokenizer: PreTrainedTokenizerFast, texts: list[str], block: int) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.pad_token_id)  # document separator
    usable = len(ids) // block * block
    return torch.tensor(ids[:usable]).view(-1, block)


class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor, batch: int = 16) -> float:
    model.eval()
    losses = [model(input_ids=blocks[i:i + batch], labels=blocks[i:i + batch]).loss.item()
              for i in range(0, len(blocks), batch)]
    return math.exp(sum(losses) / len(losses))


@torch.no_grad()
def repeated_sequence_loss(model, vocab_size: int, length: int = 50, rows: int = 8, seed: int = 0) -> dict:
    """Loss on random tokens seen once and then again: a model that can copy finds the repeat easy.

    Copying (induction heads) is what an agent needs to carry names and amounts from the instruction
    into its code; a few minutes of pretraining a 2M-parameter model do not produce it.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(8, vocab_size, (rows, length), generator=generator)
    ids = torch.cat([first, first], dim=1)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[:, :-1], dim=-1)
    token_loss = -logprobs.gather(-1, ids[:, 1:, None])[..., 0]
    return {"first_time": token_loss[:, :length - 1].mean().item(), "repeated": token_loss[:, length:].mean().item()}


@dataclass
class TinyBuild:
    path: Path
    spec: TinyModelSpec
    parameters: int
    seconds: dict = field(default_factory=dict)
    heldout_perplexity: dict = field(default_factory=dict)
    pretrain_losses: list = field(default_factory=list)


def build_tiny_base(directory: Path, spec: TinyModelSpec, domain_texts: Iterable[str] = ()) -> TinyBuild:
    """Train the tokenizer, pretrain the model on the standard library, save both into `directory`.

    `domain_texts` (training prompts and completions) only shape the tokenizer's vocabulary; the
    weights never see them here.
    """
    set_seed(spec.seed)
    started = time.perf_counter()
    corpus = stdlib_corpus(spec.corpus_chars)
    heldout, training = corpus[::20], [t for i, t in enumerate(corpus) if i % 20]
    # half the generic corpus is enough for generic merges and leaves room for the domain's phrases
    tokenizer = train_tokenizer([*training[: len(training) // 2], *domain_texts], spec.vocab_size)
    seconds = {"tokenizer": time.perf_counter() - started}

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    blocks = _blocks(tokenizer, training, spec.pretrain_block)
    heldout_blocks = _blocks(tokenizer, heldout, spec.pretrain_block)[:64]
    before = perplexity(model, heldout_blocks)

    work = directory.with_name(directory.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    args = TrainingArguments(
        output_dir=str(work / "trainer"), max_steps=spec.pretrain_steps, per_device_train_batch_size=spec.pretrain_batch,
        learning_rate=spec.pretrain_lr, lr_scheduler_type="cosine", warmup_steps=max(spec.pretrain_steps // 20, 1),
        weight_decay=0.01, logging_steps=max(spec.pretrain_steps // 20, 1), save_strategy="no", report_to="none",
        seed=spec.seed, data_seed=spec.seed, use_cpu=not torch.cuda.is_available(), bf16=False,
        activation_checkpointing=False, dataloader_pin_memory=False, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks(blocks))
    trainer.train()
    seconds["pretrain"] = time.perf_counter() - started - seconds["tokenizer"]
    losses = [{"step": r["step"], "loss": r["loss"]} for r in trainer.state.log_history if "loss" in r]
    after = perplexity(model, heldout_blocks)
    copying = repeated_sequence_loss(model, len(tokenizer), seed=spec.seed)

    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    shutil.rmtree(work / "trainer", ignore_errors=True)
    build = TinyBuild(directory, spec, sum(p.numel() for p in model.parameters()), seconds,
                      {"before": before, "after": after}, losses)
    (work / MARKER).write_text(json.dumps({
        "recipe_version": RECIPE_VERSION, "spec": asdict(spec), "parameters": build.parameters, "seconds": seconds,
        "heldout_perplexity": build.heldout_perplexity, "repeated_sequence_loss": copying,
        "pretrain_losses": losses,
        "pretrain_tokens": spec.pretrain_steps * spec.pretrain_batch * spec.pretrain_block,
        "versions": library_versions(),
    }, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    work.rename(directory)
    return build


def read_build(directory: Path, spec: TinyModelSpec) -> dict | None:
    """The build record of a finished cache, or None if there is none or it cannot be used.

    A cache built with other settings (or by an older recipe) counts as unusable, so a changed profile
    never silently reuses the old model; an existing cache that is unusable is reported in one line
    (the caller then rebuilds it).
    """
    directory = Path(directory)
    if not directory.exists():
        return None
    problem = cache_problem(directory, spec)
    if problem is not None:
        log.warning("The tiny base model in %s cannot be used (%s): rebuilding it.", directory, problem)
        return None
    return json.loads((directory / MARKER).read_text(encoding="utf-8"))


def cache_problem(directory: Path, spec: TinyModelSpec) -> str | None:
    """Why `directory` is not a finished build of `spec` that loads, or None if it is one."""
    directory = Path(directory)
    try:
        record = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MARKER}, so its build never finished"
    except (OSError, ValueError) as error:
        return f"{MARKER} is unreadable: {type(error).__name__}"
    if not isinstance(record, dict) or record.get("recipe_version") != RECIPE_VERSION:
        return "it was built by another recipe"
    if record.get("spec") != asdict(spec):
        return "it was built with other tiny_model settings"
    for name in ("config.json", "tokenizer.json"):
        try:
            json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return f"{name} is unreadable: {type(error).__name__}"
    try:
        # the header names every tensor: reading it catches a truncated or garbled file without loading it
        with safe_open(directory / "model.safetensors", framework="pt") as weights:
            weights.keys()
    except Exception as error:  # safetensors raises its own error types, which vary by version
        return f"model.safetensors is unreadable: {type(error).__name__}"
    return None
