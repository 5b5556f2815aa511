"""A saved model carries its prompt format; evaluation uses it and refuses a profile that asks for another."""
import json

import pytest

from helpers.agent.model_format import FORMAT_FILE, FormatMismatch, format_for, recorded_format, save_model_format
from helpers.agent.prompts import PromptFormat
from helpers.evaluation.step_metrics import spread_sample
from helpers.training.trainers import pick_start_model


class _Tokenizer:
    chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def test_the_trained_format_is_the_one_evaluation_uses(tmp_path):
    trained = PromptFormat("episode", observation_chars=300)
    save_model_format(tmp_path, trained, _Tokenizer())
    saved = json.loads((tmp_path / FORMAT_FILE).read_text())
    assert saved["chat_template"] == _Tokenizer.chat_template and recorded_format(tmp_path) == trained
    assert format_for(tmp_path, PromptFormat("episode", observation_chars=300)) == trained


@pytest.mark.parametrize("requested", [PromptFormat("compact"), PromptFormat("episode", observation_chars=600)])
def test_a_mismatch_is_refused_in_one_sentence(tmp_path, requested):
    save_model_format(tmp_path, PromptFormat("episode", observation_chars=300), _Tokenizer())
    with pytest.raises(FormatMismatch) as error:
        format_for(tmp_path, requested)
    message = str(error.value)
    assert "was trained with the prompt format 'episode' (observation_chars=300)" in message
    assert message.count(". ") == 0 and message.endswith("retrain the model.")


def test_an_unreadable_format_file_says_what_to_do(tmp_path):
    (tmp_path / FORMAT_FILE).write_text("{not json")
    with pytest.raises(FormatMismatch, match="delete the model folder and retrain it"):
        recorded_format(tmp_path)


def test_a_model_without_a_format_file_falls_back_to_the_profile(tmp_path, capsys):
    assert format_for(tmp_path, PromptFormat("compact")) == PromptFormat("compact")
    assert "records no prompt format" in capsys.readouterr().out


def _trained(root, folder, match):
    (root / folder).mkdir(parents=True)
    (root / folder / "config.json").write_text("{}")
    (root / folder / "training_metadata.json").write_text(json.dumps({"dev_action_match_pct": match}))


def test_a_profile_names_its_prompt_format_and_the_rest_are_defaults():
    from helpers.course.profiles import load_profile

    assert PromptFormat.from_profile(load_profile("cpu-smollm2")) == PromptFormat("episode", observation_chars=300)
    assert PromptFormat.from_profile({"prompt_style": "compact", "latest_observation_chars": 900}) == \
        PromptFormat("compact", latest_observation_chars=900)
    assert PromptFormat.from_profile({"seed": 0}) == PromptFormat()


def test_grpo_starts_from_the_better_sft_model(tmp_path):
    _trained(tmp_path, "sft_full", 80.0)
    assert pick_start_model(tmp_path) == ("sft_full", tmp_path / "sft_full")
    _trained(tmp_path, "lora_merged", 85.5)
    assert pick_start_model(tmp_path) == ("lora", tmp_path / "lora_merged")
    assert pick_start_model(tmp_path, "sft_full")[0] == "sft_full"
    with pytest.raises(ValueError, match="choose sft_full, lora or best"):
        pick_start_model(tmp_path, "grpo")


def test_without_any_sft_model_the_error_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 02_sft_full"):
        pick_start_model(tmp_path)


def test_a_spread_sample_takes_whole_tasks_of_every_scenario():
    records = [{"task_id": f"{kind}{n}", "scenario": kind, "step": s} for kind in "abc" for n in range(3) for s in range(4)]
    sample = spread_sample(records, 12)
    assert {r["scenario"] for r in sample} == set("abc")
    assert len(sample) == 12 and all(sum(r["task_id"] == t for r in sample) == 4 for t in {r["task_id"] for r in sample})
    assert spread_sample(records, 0) == records
