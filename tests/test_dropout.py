"""NumpyDropout: nn.Dropout's inverted dropout with numpy's masks (helpers/training/dropout.py)."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.training import dropout
from helpers.training.dropout import NumpyDropout, dropout_scale, use_numpy_dropout


def test_values_are_kept_with_probability_one_minus_p_and_scaled_like_nn_dropout():
    x = torch.rand(400, 1000) + 0.5  # no zeros of its own
    out = NumpyDropout(0.05).train()(x)
    kept = out != 0
    # 400,000 draws: the kept share's standard deviation is 0.00034
    assert abs(kept.float().mean().item() - 0.95) < 0.002
    torch.testing.assert_close(out[kept], x[kept] / 0.95)


def test_the_gradient_is_the_mask_times_the_scale():
    x = torch.randn(64, 48, requires_grad=True)
    out = NumpyDropout(0.3).train()(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    kept = out.detach() != 0
    torch.testing.assert_close(x.grad, torch.where(kept, grad / 0.7, torch.zeros_like(grad)))


def test_set_seed_repeats_the_masks_and_another_seed_draws_others():
    x = torch.ones(300, 200)
    layer = NumpyDropout(0.1).train()
    torch.manual_seed(7)
    first = layer(x)
    torch.manual_seed(7)
    again = layer(x)
    torch.manual_seed(8)
    other = layer(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_the_masks_do_not_depend_on_the_number_of_threads(monkeypatch):
    masks = []
    for workers in (1, 3):
        monkeypatch.setattr(dropout, "_pool", ThreadPoolExecutor(max_workers=workers))
        masks.append(dropout_scale((123, 457), 0.2, seed=11))
    assert torch.equal(masks[0], masks[1])


def test_outside_training_and_at_p_zero_the_input_passes_unchanged():
    x = torch.randn(10, 10)
    assert torch.equal(NumpyDropout(0.5).eval()(x), x)
    assert torch.equal(NumpyDropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        NumpyDropout(1.0)


def test_every_lora_dropout_is_replaced_and_the_adapter_still_trains():
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_dropout=0.1,
                                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    assert use_numpy_dropout(model) == 6  # 3 projections x 2 layers
    assert not any(type(m) is nn.Dropout and m.p > 0 for m in model.modules())
    model.train()
    ids = torch.randint(0, 100, (1, 24))
    model(ids, labels=ids).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert any(g.abs().sum() > 0 for g in lora_grads)
