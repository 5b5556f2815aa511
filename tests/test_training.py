"""Training building blocks on a model small enough for a unit test: tokenizer, SFT loss, save/reload, LoRA merge."""
import contextlib
import copy
import json
import math
from dataclasses import asdict, replace

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed
from trl import SFTConfig, SFTTrainer

from helpers.agent.generation import generate_replies
from helpers.agent.prompts import format_completion
from helpers.devices import DevicePlan, device_plan
from helpers.training.models import load_trained
from helpers.training.models.lora import SEED_TARGET_MODULES
from helpers.training.models.tiny import (
    RECIPE_VERSION, TinyModelSpec, read_build, repeated_sequence_loss, stdlib_corpus, train_tokenizer,
)
from helpers.training.trainers import ScoredLogitsSFTTrainer, compiled_layers, decoder_layers

EXAMPLES = [
    {"prompt": [{"role": "user", "content": f"Instruction: Send ${amount} to {name}.\nNext step as JSON:"}],
     "completion": [{"role": "assistant", "content": format_completion(
         f"I send ${amount} to {name}.", f'apis.wallet.send_money(receiver="{name}", amount={amount})')}]}
    for amount, name in [(12, "Ann Lee"), (340, "Bo Chan"), (7.5, "Cy Diaz"), (99, "Di Park")]
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = stdlib_corpus(200_000) + [m["content"] for e in EXAMPLES for m in e["prompt"] + e["completion"]]
    return train_tokenizer(texts, vocab_size=600)


def tiny_model(tokenizer, seed=0):
    set_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    return Qwen2ForCausalLM(config)


def sft_config(tmp_path, steps, **overrides):
    settings = dict(output_dir=str(tmp_path / "trainer"), max_steps=steps, per_device_train_batch_size=4,
                    learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                    report_to="none", seed=0, bf16=False, activation_checkpointing=False, use_cpu=True,
                    dataloader_pin_memory=False, disable_tqdm=True, completion_only_loss=True, max_length=256)
    settings.update(overrides)
    return SFTConfig(**settings)


def test_tokenizer_round_trips_splits_digits_and_has_a_chatml_template(tokenizer):
    text = 'print(apis.wallet.send_money(access_token=wallet_token, amount=1234.50, description="rent"))\n'
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    digits = [t for t in tokenizer.tokenize("amount=1234.50") if any(c.isdigit() for c in t)]
    assert all(len(t.lstrip("Ġ")) == 1 for t in digits) and len(digits) == 6
    chat = tokenizer.apply_chat_template(EXAMPLES[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert chat.startswith("<|im_start|>user\n") and chat.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_sft_loss_falls_on_a_fixed_batch(tokenizer, tmp_path):
    trainer = ScoredLogitsSFTTrainer(model=tiny_model(tokenizer), args=sft_config(tmp_path, 15),
                                   train_dataset=Dataset.from_list(EXAMPLES), processing_class=tokenizer)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 15
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_scored_logits_trainer_gives_trls_loss_and_gradients(tokenizer, tmp_path, adapter):
    # the prompt positions are left out of the LM head: the loss and every gradient must not change
    data = Dataset.from_list(EXAMPLES)
    results = {}
    for name, trainer_class in [("trl", SFTTrainer), ("scored", ScoredLogitsSFTTrainer)]:
        model = tiny_model(tokenizer)
        if adapter:
            model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                     target_modules=SEED_TARGET_MODULES))
            torch.manual_seed(1)
            for parameter_name, parameter in model.named_parameters():
                if "lora_B" in parameter_name:  # B starts at zero, which would leave A without a gradient
                    torch.nn.init.normal_(parameter, std=0.5)
        trainer = trainer_class(model=model, args=sft_config(tmp_path / name, 1), train_dataset=data,
                                processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(data))])
        assert (batch["labels"] == -100).sum() > len(data)  # the prompts are there, and not scored
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        if name == "scored":  # logits only where a next token is trained, not at the prompt's positions
            assert outputs.logits.shape[0] == (batch["labels"][:, 1:] != -100).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        results[name] = (loss.item(), grads)
    (trl_loss, trl_grads), (loss, grads) = results["trl"], results["scored"]
    assert loss == pytest.approx(trl_loss, rel=1e-4)
    assert grads.keys() == trl_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        torch.testing.assert_close(grad, trl_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_a_saved_model_reloads_with_the_same_logits_and_generates(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    reloaded, reloaded_tokenizer = load_trained(tmp_path / "model", DevicePlan())  # a CPU in fp32: same numbers
    assert load_trained(tmp_path / "model")[0].dtype == device_plan().dtype  # this machine's inference dtype
    ids = torch.tensor([tokenizer("Send $5 to Ann")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits)
    replies = generate_replies(reloaded, reloaded_tokenizer, [e["prompt"] for e in EXAMPLES], max_new_tokens=8,
                               batch_size=3)
    assert len(replies) == len(EXAMPLES) and all(isinstance(r, str) for r in replies)


def test_a_corrupt_checkpoint_gets_one_clear_error(tokenizer, tmp_path):
    tiny_model(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match="delete the folder and rerun"):
        load_trained(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="run the notebook that trains it"):
        load_trained(tmp_path / "missing")


@pytest.mark.parametrize("train_embeddings", [False, True], ids=["adapters", "adapters+embeddings"])
def test_merged_lora_model_gives_the_adapter_models_logits(tokenizer, train_embeddings):
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=SEED_TARGET_MODULES, task_type="CAUSAL_LM",
                        modules_to_save=["embed_tokens"] if train_embeddings else None,
                        ensure_weight_tying=train_embeddings)
    model = get_peft_model(tiny_model(tokenizer), config)
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change the model
            torch.nn.init.normal_(parameter, std=0.5)
        if "modules_to_save" in name:  # the trained copy of the embeddings starts equal to the original
            assert parameter.requires_grad
            with torch.no_grad():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    model.eval()
    ids = torch.tensor([tokenizer("apis.wallet.send_money(amount=12)")["input_ids"]])
    with torch.no_grad():
        adapter_logits = model(ids).logits
        merged = copy.deepcopy(model).merge_and_unload()
        merged_logits = merged(ids).logits
        with model.disable_adapter():
            plain_logits = model(ids).logits
    assert not torch.allclose(adapter_logits, plain_logits, atol=1e-3)
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-5)
    assert not any("lora" in name or "modules_to_save" in name for name, _ in merged.named_parameters())
    # the output layer still is the input embedding, now the trained one
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()


def test_repeated_sequence_loss_sees_a_model_that_copies(tokenizer):
    class Copier(torch.nn.Module):
        """Predicts the token `length` positions back: a perfect copier of the repeated half."""

        def __init__(self, vocab, length):
            super().__init__()
            self.vocab, self.length = vocab, length

        def forward(self, input_ids):
            logits = torch.zeros(*input_ids.shape, self.vocab)
            shifted = torch.roll(input_ids, self.length - 1, dims=1)
            logits.scatter_(-1, shifted[..., None], 20.0)
            logits[:, :self.length - 1] = 0.0  # nothing to copy yet
            return type("Out", (), {"logits": logits})()

    copier = repeated_sequence_loss(Copier(300, 50), 300, length=50)
    assert copier["repeated"] < 0.01 and copier["first_time"] > 5
    untrained = repeated_sequence_loss(tiny_model(tokenizer), len(tokenizer))
    assert untrained["repeated"] == pytest.approx(untrained["first_time"], abs=0.3)


def test_a_cached_base_built_with_other_settings_is_not_reused(tmp_path):
    spec = TinyModelSpec(hidden_size=32)
    save_file({"weight": torch.zeros(1)}, tmp_path / "model.safetensors")  # read_build reads its header
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "build.json").write_text(json.dumps({"recipe_version": RECIPE_VERSION, "spec": asdict(spec)}))
    assert read_build(tmp_path, spec) is not None
    assert read_build(tmp_path, replace(spec, vocab_size=512)) is None
    (tmp_path / "build.json").write_text(json.dumps({"spec": asdict(spec)}))  # an older recipe
    assert read_build(tmp_path, spec) is None


def test_compiled_layers_give_the_plain_layers_loss_and_gradients(tokenizer, tmp_path):
    # the CPU trainer's compile_layers option (compiled layers and loss): the same loss and gradients, and plain
    # layers again afterwards
    data = Dataset.from_list(EXAMPLES)
    results = {}
    for compiled in (False, True):
        trainer = ScoredLogitsSFTTrainer(model=tiny_model(tokenizer), args=sft_config(tmp_path / str(compiled), 1),
                                         train_dataset=data, processing_class=tokenizer, compile_layers=compiled)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(data))])
        context = compiled_layers(trainer.model) if compiled else contextlib.nullcontext()
        with context:
            if compiled:
                assert all(layer._compiled_call_impl is not None for layer in decoder_layers(trainer.model))
            loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
        assert all(layer._compiled_call_impl is None for layer in decoder_layers(trainer.model))
        results[compiled] = (loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()})
    (plain_loss, plain_grads), (loss, grads) = results[False], results[True]
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_trainer_with_compiled_layers_trains_and_hands_back_plain_layers(tokenizer, tmp_path):
    trainer = ScoredLogitsSFTTrainer(model=tiny_model(tokenizer), args=sft_config(tmp_path, 3),
                                     train_dataset=Dataset.from_list(EXAMPLES), processing_class=tokenizer,
                                     compile_layers=True)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(trainer.model))


def test_completion_perplexity_scores_only_the_completions_as_the_full_logits_do(tokenizer):
    from helpers.training.perplexity import completion_perplexity

    model = tiny_model(tokenizer).eval()
    records = EXAMPLES[:3]  # different lengths: one batch with padding
    nll, count = 0.0, 0
    with torch.no_grad():
        for record in records:
            prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
            start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
            logits = model(ids).logits[0, start - 1:-1]
            nll += torch.nn.functional.cross_entropy(logits, ids[0, start:], reduction="sum").item()
            count += ids.shape[1] - start
    expected = math.exp(nll / count)
    assert completion_perplexity(model, tokenizer, records) == pytest.approx(expected, rel=1e-5)
    assert completion_perplexity(model, tokenizer, records, batch_size=1) == pytest.approx(expected, rel=1e-5)
