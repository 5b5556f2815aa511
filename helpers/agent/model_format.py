"""The prompt format a model was trained with, saved next to its weights, so it is evaluated the way it learned.

A model trained on episode chats and prompted with the compact template (or the reverse) reads text it
never saw and scores as noise; the format travels with the model instead of living only in a profile.
"""
from __future__ import annotations

import json
from pathlib import Path

from helpers.agent.prompts import PromptFormat

FORMAT_FILE = "prompt_format.json"


class FormatMismatch(ValueError):
    """A model is asked to work in another prompt format than the one it was trained with."""


def save_model_format(directory: str | Path, prompt_format: PromptFormat, tokenizer) -> Path:
    """Write the prompt format and the chat template of a trained model into its folder."""
    path = Path(directory) / FORMAT_FILE
    path.write_text(json.dumps({"prompt_format": prompt_format.as_dict(), "chat_template": tokenizer.chat_template},
                               indent=2) + "\n", encoding="utf-8")
    return path


def recorded_format(directory: str | Path) -> PromptFormat | None:
    """The prompt format saved with a model, or None for a model saved without one."""
    path = Path(directory) / FORMAT_FILE
    if not path.exists():
        return None
    try:
        return PromptFormat.from_dict(json.loads(path.read_text(encoding="utf-8"))["prompt_format"])
    except (ValueError, KeyError, TypeError) as error:
        raise FormatMismatch(f"{path} cannot be read ({error}): delete the model folder and retrain it.") from None


def format_for(directory: str | Path, requested: PromptFormat) -> PromptFormat:
    """The format to evaluate a saved model with: the one it was trained with, which must be the one requested."""
    trained = recorded_format(directory)
    if trained is None:
        print(f"{Path(directory).name} records no prompt format (saved by an older notebook): using the profile's.")
        return requested
    if trained != requested:
        raise FormatMismatch(
            f"{Path(directory).name} was trained with the prompt format {_describe(trained)} but this profile asks "
            f"for {_describe(requested)}: set the profile back to the trained format, or retrain the model.")
    return trained


def _describe(prompt_format: PromptFormat) -> str:
    if prompt_format.style == "episode":
        return f"'episode' (observation_chars={prompt_format.observation_chars})"
    return (f"'{prompt_format.style}' (history_observation_chars={prompt_format.history_observation_chars}, "
            f"latest_observation_chars={prompt_format.latest_observation_chars})")
