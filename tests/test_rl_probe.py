"""The probe set: fixed pool items played greedily before GRPO's first step and every few steps, on a tiny model."""
import pandas as pd
import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerControl, TrainerState, TrainingArguments, set_seed

from helpers.agent.prompts import PromptFormat
from helpers.rl.pool import chat_items, episode_items
from helpers.rl.checks import greedy_outcomes
from helpers.rl.probe import ProbeCallback, probe_curve_quarters, probe_items
from helpers.rl.rewards import RewardWeights
from helpers.rl.rollouts import RolloutSettings
from helpers.training.models.templates import use_training_template
from helpers.training.models.tiny import stdlib_corpus, train_tokenizer

FORMAT = PromptFormat("episode", observation_chars=300)
# a tiny random model writes no JSON: short replies and few turns keep each play to a second
SETTINGS = RolloutSettings(max_steps=2, chat_max_turns=2, reply_tokens=8, chat_reply_tokens=8, workers=2)


@pytest.fixture(scope="module")
def pool():
    return episode_items(26, seed=0, prompt_format=FORMAT) + chat_items(13, seed=0)


def test_probe_items_keep_the_pools_mix_of_tasks_and_chats_and_are_the_same_each_time(pool):
    items = probe_items(pool, 12, seed=0)
    assert len(items) == 12
    assert sum(i.kind == "chat" for i in items) == 4  # 13 of 39 pool items are chats
    assert [i.key for i in items] == [i.key for i in probe_items(pool, 12, seed=0)]
    assert [i.key for i in items] != [i.key for i in probe_items(pool, 12, seed=1)]
    assert len({i.key for i in items}) == 12


def test_probe_items_hold_a_chat_whenever_the_pool_has_one_and_none_otherwise(pool):
    episodes = [i for i in pool if i.kind == "episode"]
    assert sum(i.kind == "chat" for i in probe_items(episodes + pool[-1:], 3, seed=0)) == 1
    assert all(i.kind == "episode" for i in probe_items(episodes, 5, seed=0))
    assert probe_items(pool, 0, seed=0) == []


def test_probe_quarters_compare_the_plays_of_the_first_and_the_last_quarter_of_the_steps():
    curve = pd.DataFrame({"step": [0, 5, 10], "reward": [1.0, 4.0, 3.0]})
    assert probe_curve_quarters(curve) == (1.0, 3.0)
    curve = pd.DataFrame({"step": [0, 2, 4, 6, 8], "reward": [1.0, 2.0, 5.0, 6.0, 7.0]})
    assert probe_curve_quarters(curve) == (1.5, 6.5)  # steps 0-2 against 6-8
    assert probe_curve_quarters(curve.iloc[:1]) is None


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = train_tokenizer(stdlib_corpus(50_000), vocab_size=300)
    use_training_template(tokenizer)
    return tokenizer


def tiny_model(tokenizer):
    set_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return Qwen2ForCausalLM(config)


def test_the_probe_plays_before_training_every_few_steps_and_after_the_last(pool, tokenizer, tmp_path, monkeypatch):
    from helpers.rl import probe

    items = probe_items(pool, 3, seed=0)
    model = tiny_model(tokenizer)
    model.train()
    seen = []  # each play: the model it read and whether that model was in eval mode (no dropout)

    def spy(played_model, *args, **kwargs):
        seen.append((played_model is model, played_model.training))
        return greedy_outcomes(played_model, *args, **kwargs)

    monkeypatch.setattr(probe, "greedy_outcomes", spy)
    callback = ProbeCallback(items, tokenizer, SETTINGS, RewardWeights(), every=2)
    args, control = TrainingArguments(output_dir=str(tmp_path), report_to="none"), TrainerControl()
    state = TrainerState(max_steps=5)
    callback.on_train_begin(args, state, control, model=model)
    for step in range(1, 6):
        state.global_step = step
        callback.on_step_end(args, state, control, model=model)
    curve = callback.curve()
    assert curve["step"].tolist() == [0, 2, 4, 5]
    assert {"reward", "success", "episode_success", "chat_success"} <= set(curve.columns)
    # greedy on the same weights: every play scores the same
    assert curve["reward"].nunique() == 1
    assert model.training  # the probe leaves the model as training found it
    assert seen == [(True, False)] * 4  # the trainer's current model, played in eval mode


def test_no_probe_is_played_when_it_is_off_or_has_no_items(pool, tokenizer, tmp_path):
    args, control, state = TrainingArguments(output_dir=str(tmp_path), report_to="none"), TrainerControl(), TrainerState()
    for callback in (ProbeCallback(probe_items(pool, 2, 0), tokenizer, SETTINGS, RewardWeights(), every=0),
                     ProbeCallback([], tokenizer, SETTINGS, RewardWeights(), every=2)):
        callback.on_train_begin(args, state, control, model=None)  # would fail to play with no model
        state.global_step = 2
        callback.on_step_end(args, state, control, model=None)
        assert callback.history == []
    with pytest.raises(ValueError, match="grpo_probe_every"):
        ProbeCallback([], tokenizer, SETTINGS, RewardWeights(), every=-1)
