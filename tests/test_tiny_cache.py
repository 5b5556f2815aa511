"""The tiny base model's cache: an unusable one is rebuilt with one line saying so, never a traceback."""
import logging
import shutil

import pytest

from helpers import paths
from helpers.training.models import load_base_model
from helpers.training.models import tiny
from helpers.training.models.tiny import MARKER, TinyModelSpec, build_tiny_base, cache_problem

SPEC = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
            vocab_size=300, corpus_chars=20000, pretrain_steps=1, pretrain_batch=2, pretrain_block=32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build for the module (about 2 s); each test starts from a copy of it."""
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_base(folder / "base", TinyModelSpec(**SPEC))
    return folder / "base"


@pytest.fixture
def results(tmp_path, monkeypatch, built):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    shutil.copytree(built, tmp_path / "t" / "models" / "base")
    return tmp_path


def _break_marker(base):
    (base / MARKER).write_text('{"recipe_version": 2, "spec": {"hidd')  # what a crash mid-write leaves


def _truncate_weights(base):
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


@pytest.mark.parametrize("damage, reason", [
    (_break_marker, "build.json is unreadable: JSONDecodeError"),
    (_truncate_weights, "model.safetensors is unreadable"),
    (lambda base: (base / "config.json").unlink(), "config.json is unreadable: FileNotFoundError"),
])
def test_an_unusable_cache_is_rebuilt_with_one_line(results, caplog, damage, reason):
    first = load_base_model("t", "tiny", SPEC)  # the cache is used as it is
    base = results / "t" / "models" / "base"
    assert cache_problem(base, TinyModelSpec(**SPEC)) is None and not caplog.records
    damage(base)
    with caplog.at_level(logging.WARNING, logger=tiny.__name__):
        again = load_base_model("t", "tiny", SPEC)
    (notice,) = caplog.records
    message = notice.getMessage()
    assert reason in message and message.endswith("rebuilding it.") and "\n" not in message
    assert again.details["parameters"] == first.details["parameters"]
    assert cache_problem(base, TinyModelSpec(**SPEC)) is None


def test_other_settings_rebuild_and_say_why(results, caplog):
    with caplog.at_level(logging.WARNING, logger=tiny.__name__):
        load_base_model("t", "tiny", {**SPEC, "hidden_size": 8})
    (notice,) = caplog.records
    assert "built with other tiny_model settings" in notice.getMessage()
