"""Every profile loads, names only parameters the notebooks declare, and makes GPU choices that can work."""
import pytest

from helpers.course.pipeline import declared_parameters, discover_notebooks
from helpers.course.profiles import available_profiles, load_profile
from helpers.gpu.memory import PROFILE_KEYS, parameter_counts
from helpers.gpu.settings import SettingsError, check_gpu_settings

PROFILES = available_profiles()
GPU_PROFILES = [name for name in PROFILES if name.startswith("gpu-")]


@pytest.fixture(scope="module")
def notebook_parameters():
    return {name: nb.stem for nb in discover_notebooks() for name in declared_parameters(nb)}


def test_the_hardware_profiles_exist():
    assert {"smoke", "cpu-tiny", "gpu-t4", "gpu-qwen", "gpu-qwen14b-seed"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_every_key_of_every_profile_is_a_notebook_parameter(name, notebook_parameters):
    profile = load_profile(name)
    unknown = sorted(set(profile) - set(notebook_parameters) - {"profile"})
    assert not unknown, f"{name}.yaml sets {unknown}, which no notebook declares in its parameters cell"


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_makes_gpu_choices_that_can_work(name):
    check_gpu_settings(**load_profile(name))


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_gpu_profiles_set_what_the_memory_estimate_reads_and_name_known_models(name):
    profile = load_profile(name)
    assert set(PROFILE_KEYS) <= set(profile)
    for key in ("base_model", "lora_base_model"):
        assert parameter_counts(profile[key]).total > 0
    assert profile["use_unsloth"] is False  # no requirement set installs unsloth


def test_gpu_t4_avoids_what_a_t4_cannot_run():
    t4 = load_profile("gpu-t4")
    assert t4["inference_backend"] == "transformers" and t4["use_vllm"] is False


def test_the_seed_mirror_uses_the_capstone_settings():
    seed = load_profile("gpu-qwen14b-seed")
    assert seed["lora_base_model"] == "Qwen/Qwen2.5-14B-Instruct" and seed["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (seed["use_qlora"], seed["lora_r"], seed["lora_alpha"], seed["lora_dropout"]) == (True, 16, 32, 0.05)
    assert seed["lora_batch_size"] == 4


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_gpu_profiles_name_their_grpo_start_and_generate_with_what_their_requirement_set_installs(name):
    profile = load_profile(name)
    assert profile["grpo_start"] in ("sft_full", "lora")  # `best` is only known after 02 and 03 have run
    # requirements-gpu.txt has no vLLM (it lives in an environment of its own: helpers.gpu.requirement_sets)
    assert (profile["use_vllm"], profile["inference_backend"]) == (False, "transformers")


@pytest.mark.parametrize("values, message", [
    ({"inference_backend": "tgi"}, "inference_backend is 'tgi': write one of transformers, vllm."),
    ({"vllm_mode": "remote"}, "vllm_mode is 'remote': write one of colocate, server."),
    ({"vllm_tensor_parallel_size": 0}, "vllm_tensor_parallel_size is 0"),
    ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization is 1.5"),
])
def test_a_value_that_cannot_work_is_one_sentence(values, message):
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        check_gpu_settings(**values)


def test_trl_documents_the_vllm_modes_we_accept():
    import dataclasses

    from trl import GRPOConfig

    from helpers.gpu.settings import VLLM_MODES

    field = next(f for f in dataclasses.fields(GRPOConfig) if f.name == "vllm_mode")
    assert all(f"'{mode}'" in field.metadata["help"] for mode in VLLM_MODES)
