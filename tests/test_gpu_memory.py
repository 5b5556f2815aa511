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


def test_full_sft_on_a_t4_counts_fp32_weights_gradients_and_adam_states():
    counts = parameter_counts("Qwen/Qwen2.5-0.5B-Instruct")
    t4, a100 = gpu_memory.plan_for("T4"), gpu_memory.plan_for("A100-80GB")
    static_t4 = gpu_memory.full_training(counts, t4, batch=1, seq=1) - gpu_memory._activations(counts, 1, 1, t4.dtype)
    assert static_t4 == 16 * counts.total
    static_a100 = gpu_memory.full_training(counts, a100, 1, 1) - gpu_memory._activations(counts, 1, 1, a100.dtype)
    assert static_a100 == 8 * counts.total


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


def test_gpu_t4_fits_a_t4_at_every_stage_and_gpu_qwen_does_not():
    t4 = gpu_memory.GPUS["T4"][0]
    assert max(stage_estimates(load_profile("gpu-t4"), "T4").values()) <= t4
    assert max(stage_estimates(load_profile("gpu-qwen"), "T4").values()) > t4


def test_the_14b_seed_mirror_serves_its_merged_model_from_one_80_gb_card():
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


def test_the_readme_shows_the_table_the_helper_computes():
    from helpers.paths import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    table = gpu_memory.markdown_table(GPU_PROFILES, list(gpu_memory.README_GPUS))
    assert f"<!-- gpu-memory:start -->\n{table}\n<!-- gpu-memory:end -->" in readme, \
        "README's memory table is stale: run `python -m helpers.gpu.memory --readme`"
