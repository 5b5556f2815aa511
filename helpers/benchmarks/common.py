"""What the training benchmarks share: a profile's SFT data and base model, as the notebooks load them."""
from __future__ import annotations

from helpers.course.profiles import load_profile
from helpers.data.training_sets import sft_datasets
from helpers.paths import profile_data_dir
from helpers.training.models import load_base_model
from helpers.training.models.templates import use_training_template


def profile_sft_data(profile: str):
    """(profile values, the train split of 02's data, whether it is episode chats)."""
    params = load_profile(profile)
    style = params.get("prompt_style", "seed")
    data = sft_datasets(profile_data_dir(profile) / "datasets", style, params.get("sft_conversations", 0),
                        episodes=params.get("sft_episodes", 0), asking=params.get("sft_asking_conversations"))
    return params, data["train"], style == "episode"


def profile_base_model(profile: str, params: dict, episode_format: bool):
    """The profile's base model, with weights for training (fp32 on a CPU), and tokenizer (the tiny one must have
    been built by 02 already)."""
    base = load_base_model(profile, params.get("base_model", "tiny"), params.get("tiny_model"), training=True)
    if episode_format:
        use_training_template(base.tokenizer)
    return base.model, base.tokenizer
