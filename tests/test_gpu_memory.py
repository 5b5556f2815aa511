"""The GPU memory estimate: parameter counts from transformers' model classes, the formulas, every GPU profile."""
import pytest

from helpers.course.profiles import ProfileError, available_profiles, load_profile
from helpers.gpu import memory as gpu_memory
from helpers.gpu.memory import GIB, parameter_counts, stage_estimates

GPU_PROFILES = [name for name in available_profiles() if name.startswith("gpu-")]
# the sizes Qwen publishes for these models (billions of parameters)
PUBLISHED = {"Qwen/Qwen2.5-0.5B-Instruct": 0.49, "Qwen/Qwen2.5-1.5B-Instruct": 1.54, "Qwen/Qwen2.5-3B-Instruct": 3.09,
             "Qwen/Qwen2.5-7B-Instruct": 7.61, "Qwen/Qwen2.5-14B-Instruct": 14.7}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_match_the_published_sizes(name):
    counts = parameter_counts(name)
    assert counts.total / 1e9 == pytest.approx(PUBLISHED[name], rel=0.01)
    assert 0.5 * counts.total < counts.linear < counts.total


def test_the_0_5b_count_adds_up_by_hand():
    c = parameter_counts("Qwen/Qwen2.5-0.5B-Instruct")
    h, kv, i, layers, vocab = 896, 2 * 64, 4864, 24, 151936
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h  # q, k, v with biases; o; MLP; norms
    assert c.total == layers * per_layer + vocab * h + h  # tied embeddings, final norm
    assert c.lora_per_rank == layers * ((h + h) * 2 + (h + kv) * 2 + 2 * (h + i) + (i + h))


def test_full_sft_counts_fp32_master_weights_gradients_and_adam_states_on_every_gpu():
    counts = parameter_counts("Qwen/Qwen2.5-0.5B-Instruct")
    for gpu in ("T4", "A100-80GB"):
        plan = gpu_memory.plan_for(gpu)
        static = gpu_memory.full_training(counts, plan, 1, 1) - gpu_memory._activations(counts, 1, 1, plan.dtype)
        assert static == 16 * counts.total


def test_qlora_adapters_are_bf16_on_bf16_gpus_and_fp32_below_8_0():
    counts = parameter_counts("Qwen/Qwen2.5-7B-Instruct")
    a100, t4 = gpu_memory.plan_for("A100-80GB"), gpu_memory.plan_for("T4")
    frozen = gpu_memory.lora_training(counts, a100, rank=0, batch=0, seq=0, quantized=True)
    adapters = {gpu: gpu_memory.lora_training(counts, plan, 16, 0, 0, quantized=True) - frozen
                for gpu, plan in (("A100", a100), ("T4", t4))}
    assert adapters == {"A100": 16 * counts.lora_per_rank * 6, "T4": 16 * counts.lora_per_rank * 10}


def test_qlora_keeps_linear_layers_in_about_half_a_byte_and_the_rest_in_fp32():
    counts = parameter_counts("Qwen/Qwen2.5-14B-Instruct")
    plan = gpu_memory.plan_for("A100-80GB")
    frozen = gpu_memory.lora_training(counts, plan, rank=0, batch=0, seq=0, quantized=True)
    assert frozen == pytest.approx(counts.linear * 0.5159 + (counts.total - counts.linear) * 4, rel=1e-3)
    assert frozen / GIB == pytest.approx(12.1, abs=0.1)


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_every_gpu_profile_gets_an_estimate_for_every_stage(name):
    estimates = stage_estimates(load_profile(name), "A100-80GB")
    assert [stage[:2] for stage in estimates] == ["02", "03", "03", "04", "05"]
    assert all(gpu_memory.CUDA_OVERHEAD_GIB < gib < 80 for gib in estimates.values())


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_every_gpu_profile_fits_its_target_card_at_every_stage(name):
    assert name in gpu_memory.TARGET_GPUS, f"add the card {name} is written for to helpers.gpu.memory.TARGET_GPUS"
    card = gpu_memory.TARGET_GPUS[name]
    estimates = stage_estimates(load_profile(name), card)
    too_big = {stage: round(gib, 1) for stage, gib in estimates.items() if gib > gpu_memory.GPUS[card][0]}
    assert not too_big, f"{name} does not fit its {card} at {too_big}"


def test_gpu_qwen_does_not_fit_a_t4():
    assert max(stage_estimates(load_profile("gpu-qwen"), "T4").values()) > gpu_memory.GPUS["T4"][0]


def test_grpo_is_estimated_for_the_model_the_profile_starts_from():
    profile = load_profile("gpu-qwen")
    from_sft = stage_estimates(profile, "A100-80GB")["04 GRPO"]
    from_lora = stage_estimates({**profile, "grpo_start": "lora"}, "A100-80GB")["04 GRPO"]
    assert from_lora > from_sft + 10  # the merged 7B model against the 0.5B one
    with pytest.raises(ProfileError, match="sets grpo_start to 'best': a GPU profile names the model GRPO starts"):
        stage_estimates({**profile, "grpo_start": "best"}, "A100-80GB")


def test_colocated_vllm_adds_its_share_of_the_card_to_grpo():
    profile = load_profile("gpu-qwen")
    alone = stage_estimates(profile, "A100-80GB")["04 GRPO"]
    colocated = stage_estimates({**profile, "use_vllm": True, "vllm_mode": "colocate"}, "A100-80GB")["04 GRPO"]
    assert colocated - alone == pytest.approx(profile["vllm_gpu_memory_utilization"] * 80)


def test_the_14b_seed_mirror_evaluates_its_merged_model_on_one_80_gb_card():
    estimates = stage_estimates(load_profile("gpu-qwen14b-seed"), "H100-80GB")
    assert estimates["03 merge"] == pytest.approx(parameter_counts("Qwen/Qwen2.5-14B-Instruct").total * 2 / GIB + 0.5)
    assert estimates["05/06 inference"] < 80


def test_a_profile_without_the_keys_or_with_an_unknown_model_is_one_sentence():
    with pytest.raises(ProfileError, match="does not set .*base_model"):
        stage_estimates({"profile": "x"}, "T4")
    with pytest.raises(ProfileError, match="No architecture numbers for 'org/unknown'"):
        parameter_counts("org/unknown")
    with pytest.raises(ProfileError, match="Unknown GPU 'V100'"):
        gpu_memory.plan_for("V100")


def test_the_command_prints_the_readme_table(capsys):
    assert gpu_memory.main(["--profile", "gpu-t4", "--gpu", "T4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| profile | stage | T4 (15 GiB) |" and len(lines) == 2 + 5
    assert not any("does not fit" in line for line in lines)


def test_the_gpu_guide_shows_the_table_the_helper_computes():
    from helpers.course.colab import GUIDE

    table = gpu_memory.markdown_table(GPU_PROFILES, list(gpu_memory.TABLE_GPUS))
    assert f"<!-- gpu-memory:start -->\n{table}\n<!-- gpu-memory:end -->" in GUIDE.read_text(), \
        "docs/gpus-and-colab.md's memory table is stale: run `python -m helpers.gpu.memory --write`"
