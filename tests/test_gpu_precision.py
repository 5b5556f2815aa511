"""The precision rules of helpers.gpu.precision against a T4, an A100 and a CPU (device capability given, not read)."""
import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer

from helpers.devices import DevicePlan
from helpers.gpu.precision import (FiniteLossCallback, NonFiniteError, keep_trainable_in_fp32, require_finite,
                                   require_finite_logits)

T4 = DevicePlan(gpu_count=1, capability=(7, 5), gpu_name="Tesla T4")
A100 = DevicePlan(gpu_count=1, capability=(8, 0), gpu_name="NVIDIA A100-SXM4-80GB")
CPU = DevicePlan()
WORDS = ["<pad>", "<unk>", "send", "$12.50", "to", "ann", "for", "lunch,", "then", "show", "my", "balance.", "ok"]


def tiny_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                        pad_token_id=0))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   chat_template="{% for m in messages %}{{ m['content'] | lower }} {% endfor %}")


def poison(model) -> None:
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(float("nan"))


def test_trl_casts_quantized_models_adapters_to_bf16_and_below_8_0_they_go_back_to_fp32():
    # what TRL's SFTTrainer does to any model that reports 4-bit loading, on every device
    model = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.is_loaded_in_4bit = True
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "send $12.50 to ann"}],
                               "completion": [{"role": "assistant", "content": "ok"}]}])
    args = SFTConfig(output_dir="unused", max_steps=1, report_to="none", use_cpu=True, bf16=False,
                     activation_checkpointing=False, max_length=32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tiny_tokenizer())
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.bfloat16 for p in trainable)
    frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}

    assert keep_trainable_in_fp32(trainer.model, A100) == 0  # bf16 GPUs keep TRL's choice (the QLoRA recipe)
    assert keep_trainable_in_fp32(trainer.model, T4) == len(trainable)
    assert all(p.dtype == torch.float32 for p in trainable)
    assert {p.dtype for p in trainer.model.parameters() if not p.requires_grad} == frozen


def test_require_finite_accepts_numbers_and_tensors_and_names_the_fp32_fallback_on_a_t4():
    require_finite(1.5, "training loss", T4)
    require_finite(torch.ones(3), "logits", T4)
    with pytest.raises(NonFiniteError) as raised:
        require_finite(math.nan, "training loss", T4, step=7)
    message = str(raised.value)
    assert message.startswith("The training loss is nan at step 7 in fp16 on Tesla T4: ")
    assert "HELPERS_PRECISION=fp32" in message and message.count(". ") == 0
    with pytest.raises(NonFiniteError, match="with weights in bfloat16 on NVIDIA A100-SXM4-80GB: lower the learning"):
        require_finite(torch.tensor([1.0, math.inf]), "logits", A100)


def test_the_logit_probe_passes_a_healthy_model_and_stops_an_overflowing_one():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    require_finite_logits(model, tokenizer, CPU)
    poison(model)
    with pytest.raises(NonFiniteError, match=r"The model's output \(logits\) is NaN or infinite"):
        require_finite_logits(model, tokenizer, CPU)


def test_the_loss_guard_stops_a_trainer_at_the_first_non_finite_loss(tmp_path):
    model = tiny_model()
    poison(model)
    ids = torch.tensor([[2, 3, 4, 5]])
    data = [{"input_ids": ids[0], "labels": ids[0]}] * 2
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, logging_steps=1, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[FiniteLossCallback(CPU)])
    with pytest.raises(NonFiniteError, match="The training loss is nan at step 1 "):
        trainer.train()
