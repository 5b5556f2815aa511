"""GRPO's loss on multi-turn rollouts: the world's tokens are read but never trained on.

The loss TRL computes with `env_mask` is compared with one computed by hand on a tiny model, over the
model's own tokens only; `EpisodeGRPOTrainer` (the LM head on those tokens only) must give the same loss
and gradients as TRL's own trainer.
"""
import contextlib

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed
from trl import GRPOConfig, GRPOTrainer

from helpers.rl.grpo import EpisodeGRPOTrainer, token_logps_and_entropy
from helpers.rl.rewards import OUTCOME_REWARDS
from helpers.training.models.templates import use_training_template
from helpers.training.models.tiny import stdlib_corpus, train_tokenizer
from helpers.training.trainers import compiled_layers, decoder_layers

TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = train_tokenizer(stdlib_corpus(50_000), vocab_size=300)
    use_training_template(tokenizer)
    return tokenizer


def tiny_model(tokenizer):
    set_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return Qwen2ForCausalLM(config)


def make_trainer(cls, tokenizer, tmp_path, beta: float = 0.0, model=None, **options):
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                      temperature=TEMPERATURE, use_cpu=True, bf16=False, report_to="none", max_steps=1,
                      logging_steps=1, save_strategy="no", beta=beta)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}] * 2)
    trainer = cls(model=model or tiny_model(tokenizer), reward_funcs=list(OUTCOME_REWARDS), args=args, train_dataset=dataset,
                  processing_class=tokenizer, rollout_func=lambda prompts, trainer: None, **options)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which these tests do not run
    return trainer


def batch(vocab: int):
    """Two rollouts: a prompt, then a completion whose middle is the world's text (env_mask 0)."""
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, vocab, (2, 5), generator=generator)
    completion = torch.randint(3, vocab, (2, 9), generator=generator)
    completion_mask = torch.ones(2, 9, dtype=torch.long)
    completion_mask[1, 7:] = 0  # the second rollout is shorter: padding
    tool_mask = torch.tensor([[1, 1, 0, 0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1, 1, 1, 1]])
    return {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
            "completion_mask": completion_mask, "tool_mask": tool_mask,
            "advantages": torch.tensor([1.5, -0.5]),
            "num_items_in_batch": (completion_mask * tool_mask).sum()}


def gradients_of(loss, model) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def by_hand(model, inputs, mask) -> torch.Tensor:
    """-sum of advantage x log p(token) over the masked-in completion tokens, over their count: DAPO on-policy."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    length = inputs["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=attention).logits[:, -length - 1:-1] / TEMPERATURE
    logps = torch.log_softmax(logits.float(), -1).gather(-1, inputs["completion_ids"][..., None]).squeeze(-1)
    return -(inputs["advantages"][:, None] * logps * mask).sum() / mask.sum()


@pytest.mark.parametrize("cls", [GRPOTrainer, EpisodeGRPOTrainer])
def test_the_world_tokens_do_not_enter_the_loss(cls, tokenizer, tmp_path):
    trainer = make_trainer(cls, tokenizer, tmp_path)
    inputs = batch(len(tokenizer))
    model = trainer.model
    trained = gradients_of(trainer._compute_loss(model, dict(inputs)), model)
    model_tokens = inputs["completion_mask"] * inputs["tool_mask"]
    expected = gradients_of(by_hand(model, inputs, model_tokens), model)
    torch.testing.assert_close(trained, expected, rtol=1e-4, atol=1e-6)
    # the check can fail: counting the world's tokens too gives other gradients
    every_token = gradients_of(by_hand(model, inputs, inputs["completion_mask"]), model)
    assert not torch.allclose(trained, every_token, rtol=1e-3, atol=1e-5)


def test_scoring_only_the_model_tokens_changes_nothing(tokenizer, tmp_path):
    inputs = batch(len(tokenizer))
    results = []
    for cls in (GRPOTrainer, EpisodeGRPOTrainer):
        trainer = make_trainer(cls, tokenizer, tmp_path / cls.__name__)
        loss = trainer._compute_loss(trainer.model, dict(inputs))
        results.append((loss.detach(), gradients_of(loss, trainer.model),
                        trainer._metrics["train"]["entropy"][-1]))
    (loss_a, grad_a, entropy_a), (loss_b, grad_b, entropy_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=1e-6)
    assert entropy_b == pytest.approx(entropy_a, rel=1e-4)


def test_the_compiled_trainer_gives_the_plain_loss_gradients_and_entropy(tokenizer, tmp_path):
    # compile_layers (the CPU path of 04): compiled decoder layers and one compiled pass for log-probabilities and
    # entropy; in fp32 the same numbers as the plain trainer
    inputs = batch(len(tokenizer))
    results = {}
    for compiled in (False, True):
        trainer = make_trainer(EpisodeGRPOTrainer, tokenizer, tmp_path / str(compiled), compile_layers=compiled)
        assert (trainer.token_logps_and_entropy is token_logps_and_entropy) is not compiled
        with compiled_layers(trainer.model) if compiled else contextlib.nullcontext():
            if compiled:
                assert all(layer._compiled_call_impl is not None for layer in decoder_layers(trainer.model))
            loss = trainer._compute_loss(trainer.model, dict(inputs))
            results[compiled] = (loss.detach(), gradients_of(loss, trainer.model),
                                 trainer._metrics["train"]["entropy"][-1])
    (loss_a, grad_a, entropy_a), (loss_b, grad_b, entropy_b) = results[False], results[True]
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=1e-6)
    assert entropy_b == pytest.approx(entropy_a, rel=1e-4)


def test_the_entropy_is_logged_without_a_gradient_and_matches_the_distribution():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=generator, requires_grad=True)
    targets = torch.randint(0, 11, (5,), generator=generator)
    logps, entropy = token_logps_and_entropy(logits, targets, TEMPERATURE)
    probs = torch.softmax(logits.detach() / TEMPERATURE, -1)
    torch.testing.assert_close(logps.detach(), probs.log().gather(-1, targets[:, None]).squeeze(-1))
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1))
    assert logps.requires_grad and not entropy.requires_grad


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_training_runs_on_compiled_layers_and_leaves_the_plain_ones(tokenizer, tmp_path, monkeypatch, beta):
    seen = []

    def record(trainer, *args, **kwargs):  # TRL's training loop, replaced: which layers would it run?
        models = [trainer.model] + ([trainer.ref_model] if trainer.ref_model is not None else [])
        seen.append([layer._compiled_call_impl is not None for m in models for layer in decoder_layers(m)])

    monkeypatch.setattr(GRPOTrainer, "train", record)
    saved = tmp_path / "start"  # with beta > 0 TRL loads its reference model from the start model's folder, as 04
    tiny_model(tokenizer).save_pretrained(saved)
    start = lambda: Qwen2ForCausalLM.from_pretrained(saved)  # noqa: E731
    trainer = make_trainer(EpisodeGRPOTrainer, tokenizer, tmp_path, beta=beta, model=start(), compile_layers=True)
    assert (trainer.ref_model is not None) == (beta > 0)
    trainer.train()
    assert seen == [[True] * (2 if beta == 0 else 4)]
    models = [trainer.model] + ([trainer.ref_model] if trainer.ref_model is not None else [])
    assert all(layer._compiled_call_impl is None for m in models for layer in decoder_layers(m))
    make_trainer(EpisodeGRPOTrainer, tokenizer, tmp_path / "plain", beta=beta, model=start()).train()
    assert seen[-1] == [False] * (2 if beta == 0 else 4)
