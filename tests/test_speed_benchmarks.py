"""The speed benchmarks' arithmetic and plumbing, without timing anything: FLOP counts, limits, llama.cpp's skip."""
import json
import sys

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.benchmarks import limits, llama_cpp
from helpers.benchmarks.sft_throughput import training_flops


def test_training_flops_count_every_parameter_and_the_head_only_where_trained():
    config = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=40, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model_parameters = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    norms = (2 * config.num_hidden_layers + 1) * config.hidden_size  # RMSNorm weights: no matrix product
    flops = training_flops(config, lengths=[10, 30], scored=[4, 6])
    assert flops["parameters"] == model_parameters - norms
    assert flops["six_n"] == 6 * flops["parameters"] * 40
    head = 100 * 16
    layers = flops["parameters"] - head
    assert flops["model"] == 6 * (layers * 40 + head * 10)  # the head on the 10 trained positions only
    assert flops["attention"] == 6 * 2 * 3 * 16 * (10 ** 2 + 30 ** 2) / 2  # causal: half of every n x n
    # LoRA: frozen weights get no gradient (forward + the inputs' gradient), attention keeps its backward
    frozen = training_flops(config, lengths=[10, 30], scored=[4, 6], frozen=True)
    assert frozen["model"] == 4 * (layers * 40 + head * 10)
    assert frozen["attention"] == flops["attention"] and frozen["six_n"] == flops["six_n"]


def test_limits_turn_rates_into_shares_and_bounds():
    measured = limits.MachineLimits(threads=2, bf16_gflops=1000.0, fp32_gflops=200.0, read_gbs=27.0, copy_gbs=25.0,
                                    read_gbs_cached=50.0, copy_gbs_cached=40.0, cache_bytes=480 * 2**20)
    assert measured.mfu(250e9) == pytest.approx(0.25)
    # 270 MB of bf16 weights read once a step at 27 GB/s: 100 steps/s, each one token per sequence
    assert measured.decode_bound_tokens_per_s(270e6) == pytest.approx(100.0)
    assert measured.decode_bound_tokens_per_s(270e6, sequences=8) == pytest.approx(800.0)


def test_the_last_level_cache_is_the_largest_one_sysfs_lists(tmp_path):
    for index, size in enumerate(["48K", "2048K", "491520K"]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    assert limits.last_level_cache_bytes(str(tmp_path)) == 480 * 2**20
    assert limits.last_level_cache_bytes(str(tmp_path / "missing")) == limits.L3_BYTES


def test_the_matrix_rate_is_a_positive_figure_for_each_dtype():
    import torch

    for dtype in (torch.bfloat16, torch.float32):
        rate = limits.matmul_gflops(1024, 1024, 1024, dtype, repeats=1, budget_s=0.0)  # one product per timing
        assert rate > 0 and rate == rate  # a number, not NaN, whatever the machine's speed


def test_evaluation_chats_end_where_each_assistant_turn_starts(tmp_path):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Instruction: pay"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "Output:\n1"},
                {"role": "assistant", "content": "a2"}]
    path = tmp_path / "episodes_dev.jsonl"
    path.write_text("\n".join(json.dumps({"messages": messages, "task_id": f"t{i}"}) for i in range(3)) + "\n")
    chats = llama_cpp.evaluation_chats(path, 3)
    assert chats == [messages[:2], messages[:4], messages[:2]]
    assert all(chat[-1]["role"] == "user" for chat in chats)


def test_the_llama_cpp_benchmark_skips_in_one_sentence_without_llama_cpp(monkeypatch, capsys):
    monkeypatch.delenv(llama_cpp.LLAMA_PYTHON_VARIABLE, raising=False)
    monkeypatch.setattr(llama_cpp.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["llama_cpp"])
    llama_cpp.main()
    out = capsys.readouterr().out.strip()
    assert out == llama_cpp.MISSING and out.count(". ") == 0
    with pytest.raises(RuntimeError, match="llama-cpp-python is not importable"):
        llama_cpp.run_llama("model.gguf", [[1, 2]], max_new_tokens=4, batch=1)



def test_the_decoding_benchmark_reads_llama_cpps_single_stream_rate_from_its_run(monkeypatch, capsys):
    from helpers.benchmarks import decoding

    monkeypatch.setattr(llama_cpp, "llama_python", lambda explicit=None: None)
    assert decoding.llama_cpp_single_stream(None, [], 8) is None
    assert capsys.readouterr().out.strip() == llama_cpp.MISSING
    calls = []

    def fake_run(gguf, prompts, max_new_tokens, batch, threads=0, python=None, single=True):
        calls.append((prompts, max_new_tokens, batch, python))
        return {"single": {"tokens": 30, "prefill_s": 1.0, "decode_s": 2.0}}

    monkeypatch.setattr(llama_cpp, "llama_python", lambda explicit=None: "/venv/bin/python")
    monkeypatch.setattr(llama_cpp, "prompt_ids", lambda tokenizer, chats: [[1, 2, 3]] * len(chats))
    monkeypatch.setattr(llama_cpp, "run_llama", fake_run)
    assert decoding.llama_cpp_single_stream(None, [[{"role": "user", "content": "hi"}]], 8) == 10.0
    assert calls == [([[1, 2, 3]], 8, 1, "/venv/bin/python")]


def test_asking_rates_count_questions_per_chat_lacking_a_detail_and_per_group():
    import pandas as pd
    from helpers.benchmarks.asking import asking_rates

    table = pd.DataFrame([  # two groups lacking a detail (one asks once and succeeds), one complete group
        {"item": "a", "missing": 1, "asked": True, "success": True},
        {"item": "a", "missing": 1, "asked": False, "success": False},
        {"item": "b", "missing": 2, "asked": False, "success": False},
        {"item": "b", "missing": 2, "asked": False, "success": False},
        {"item": "c", "missing": 0, "asked": True, "success": False},
        {"item": "c", "missing": 0, "asked": False, "success": True},
    ])
    rates = asking_rates(table)
    assert (rates["lacking"], rates["asked"], rates["asked_pct"]) == (4, 1, 25.0)
    assert (rates["groups_lacking"], rates["groups_with_a_question"]) == (2, 1)
    assert rates["success_lacking_pct"] == 25.0 and rates["success_after_asking_pct"] == 100.0
    assert (rates["complete"], rates["asked_complete"], rates["success_complete_pct"]) == (2, 1, 50.0)


def test_sampled_types_count_successes_and_the_groups_whose_totals_differ():
    import pandas as pd
    from helpers.benchmarks.sampled_types import split_by_type

    table = pd.DataFrame([  # type a: one group that splits, one all alike; type b: one group, all alike
        {"type": "a", "item": "a1", "success": True, "total": 6.0},
        {"type": "a", "item": "a1", "success": False, "total": 1.0},
        {"type": "a", "item": "a2", "success": True, "total": 6.0},
        {"type": "a", "item": "a2", "success": True, "total": 6.0},
        {"type": "b", "item": "b1", "success": False, "total": -1.0},
        {"type": "b", "item": "b1", "success": False, "total": -1.0},
    ])
    per_type = split_by_type(table)
    assert per_type.loc["a"].to_dict() == {"rollouts": 4, "successes": 3, "groups": 2, "groups_that_split": 1}
    assert per_type.loc["b"].to_dict() == {"rollouts": 2, "successes": 0, "groups": 1, "groups_that_split": 0}


def test_a_group_of_rollouts_becomes_the_trainers_micro_batch():
    from helpers.benchmarks.grpo_training import group_inputs
    from helpers.rl.rewards import RewardWeights
    from helpers.rl.rollouts import Outcome, Rollout

    def rollout(completion, env_mask, success):
        return Rollout(item=None, prompt_ids=[5, 6, 7], completion_ids=completion, env_mask=env_mask,
                       outcome=Outcome("episode", "t", "s", success=success, goal_checks=1, goal_passed=int(success)))

    inputs = group_inputs([rollout([1, 2, 3, 4], [1, 0, 0, 1], True), rollout([8, 9], [1, 1], False)],
                          pad_id=0, weights=RewardWeights())
    assert inputs["completion_ids"].tolist() == [[1, 2, 3, 4], [8, 9, 0, 0]]
    assert inputs["completion_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert (inputs["completion_mask"] * inputs["tool_mask"]).tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]
    assert int(inputs["num_items_in_batch"]) == 4  # the model's own tokens: what DAPO's loss averages over
    advantages = inputs["advantages"].tolist()
    assert advantages[0] > 0 > advantages[1] and abs(sum(advantages)) < 1e-6
    assert inputs["prompt_ids"].tolist() == [[5, 6, 7]] * 2


def test_the_operator_profile_counts_the_products_arithmetic_and_time():
    import torch

    from helpers.benchmarks.decoding import operator_profile

    a, b = torch.randn(64, 32), torch.randn(32, 48)

    class Products:  # stands in for a generator: three products and a softmax per call
        def generate(self, chats):
            return [torch.softmax(torch.mm(a, b), dim=-1) for _ in chats]

    found = operator_profile(Products, ["one", "two", "three"])
    assert found["products_gflop"] == pytest.approx(3 * 2 * 64 * 32 * 48 / 1e9)
    assert 0 < found["products_s"] <= found["inside_operators_s"] <= found["seconds"]
    names = [name for name, _, _ in found["operators"]]
    assert "aten::mm" in names and "aten::_softmax" in names
    assert dict((name, count) for name, _, count in found["operators"])["aten::mm"] == 3


def test_the_dev_check_benchmark_compares_both_generators_on_the_dev_steps(tmp_path, monkeypatch, capsys):
    from helpers.agent import generation
    from helpers.benchmarks import decoding

    right = '{"thought": "t", "action": "print(apis.wallet.show_balance())"}'
    records = [{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": f"Instruction: task {i}"}],
                "completion": [{"role": "assistant", "content": right}], "task_id": f"t{i}", "scenario": "sc",
                "step": 0} for i in range(4)]
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "stepwise_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(decoding, "profile_data_dir", lambda profile: tmp_path)
    calls = []

    def plain(model, tokenizer, chats, max_new_tokens, batch):  # right on every step
        calls.append(("plain", len(chats), batch))
        return [right] * len(chats)

    class Decoder:  # wrong on the last step
        def __init__(self, model, tokenizer, max_new_tokens, batch):
            calls.append(("decoder", max_new_tokens, batch))

        def generate(self, chats):
            return [right] * (len(chats) - 1) + ["not json"]

    monkeypatch.setattr(generation, "generate_replies", plain)
    monkeypatch.setattr(decoding, "ChatGenerator", Decoder)
    decoding.dev_step_check(None, None, "any", limit=0, batch=3, rounds=2)
    out = capsys.readouterr().out
    assert calls == [("plain", 4, 3), ("decoder", 256, 3)] * 2
    assert out.count("| generate_replies |") == 2 and out.count("| 100.0% |") == 2
    assert out.count("| 75.0% | 3/4 |") == 2
    assert "x the speed of generate_replies" in out


def test_every_attention_of_the_attention_benchmark_computes_causal_attention():
    import torch

    from helpers.benchmarks import attention

    torch.manual_seed(0)
    n = 300  # three blocks of 128 queries, the last one short
    q = torch.randn(1, attention.HEADS, n, attention.DIM, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, attention.KV_HEADS, n, attention.DIM, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, attention.KV_HEADS, n, attention.DIM, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(1, attention.HEADS, n, attention.DIM, dtype=torch.float64)
    scores = torch.einsum("hqd,hkd->hqk", q[0], k[0].repeat_interleave(3, 0)) * attention.DIM ** -0.5
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).tril().logical_not(), float("-inf"))
    expected = torch.einsum("hqk,hkd->hqd", torch.softmax(scores, -1), v[0].repeat_interleave(3, 0))[None]
    expected_dq = torch.autograd.grad(expected, q, grad)[0]
    for way in (attention.flash_grouped, attention.flash_repeated, attention.products, attention.blocks,
                attention.six_blocks):
        out = way(q, k, v)
        # fp64: the CPU flash kernel's blocked sums differ from einsum's in the 7th digit
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.autograd.grad(out, q, grad)[0], expected_dq, rtol=1e-5, atol=1e-6)
    forward, backward = attention.time_one(attention.blocks, q, k, v, grad, repeats=1)
    assert forward > 0 and backward > 0
