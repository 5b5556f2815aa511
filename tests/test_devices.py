"""The device/dtype decision for a T4, an A100, an H100, a CPU, and ranks of a distributed launch."""
import subprocess

import pytest
import torch

from helpers import devices
from helpers.devices import DevicePlan, device_plan

T4 = dict(gpu_count=1, capability=(7, 5), gpu_name="Tesla T4")
A100 = dict(gpu_count=1, capability=(8, 0), gpu_name="NVIDIA A100-SXM4-80GB")
H100 = dict(gpu_count=8, capability=(9, 0), gpu_name="NVIDIA H100 80GB HBM3")


def test_a_t4_gets_fp16_never_bf16():
    plan = DevicePlan(**T4)
    assert (plan.bf16, plan.fp16) == (False, True)
    assert plan.dtype == torch.float16 and plan.vllm_dtype == "float16"
    # fp16 autocast trains fp32 master weights; a model loaded in fp16 cannot be unscaled
    assert plan.train_dtype == torch.float32
    assert plan.load_kwargs(training=True) == {"dtype": torch.float32, "device_map": "auto"}
    assert plan.device == "cuda"
    assert plan.load_kwargs(quantized=True) == {"dtype": torch.float16, "device_map": "auto"}


@pytest.mark.parametrize("gpu", [A100, H100], ids=["A100", "H100"])
def test_ampere_and_newer_infer_in_bf16_and_train_fp32_master_weights_under_bf16_autocast(gpu):
    plan = DevicePlan(**gpu)
    assert (plan.bf16, plan.fp16) == (True, False)
    assert plan.dtype == torch.bfloat16 and plan.vllm_dtype == "bfloat16"
    # an AdamW step on bf16 weights rounds small updates away: full training keeps fp32 weights
    assert plan.train_dtype == torch.float32
    assert plan.load_kwargs(training=True)["dtype"] == torch.float32
    assert plan.load_kwargs(quantized=True)["dtype"] == torch.bfloat16
    assert "fp32 weights under bf16 autocast" in plan.describe()


def test_bf16_can_be_turned_off_and_fp16_takes_its_place():
    plan = DevicePlan(**A100, allow_bf16=False)
    assert (plan.bf16, plan.fp16, plan.dtype) == (False, True, torch.float16)


def test_a_cpu_with_native_bf16_trains_fp32_weights_under_bf16_autocast_and_infers_in_bf16():
    plan = DevicePlan(cpu_bf16=True)
    assert (plan.on_gpu, plan.bf16, plan.fp16) == (False, True, False)
    assert plan.train_dtype == torch.float32 and plan.dtype == torch.bfloat16
    assert plan.load_kwargs(training=True) == {"dtype": torch.float32, "device_map": None}
    assert plan.load_kwargs() == {"dtype": torch.bfloat16, "device_map": None}
    assert plan.describe() == "CPU: weights bfloat16, training fp32 weights under bf16 autocast"
    assert DevicePlan(cpu_bf16=True, allow_bf16=False).dtype == torch.float32


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                           ("fpu avx2 amx_bf16 amx_tile", True), ("fpu avx2 avx512f", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some cpu\nflags\t\t: {flags}\n")
    assert devices.cpu_has_native_bf16(str(cpuinfo)) is native
    assert devices.cpu_has_native_bf16(str(tmp_path / "missing")) is False


def test_a_cpu_gets_fp32_no_mixed_precision_and_no_device_map():
    plan = DevicePlan()
    assert (plan.on_gpu, plan.bf16, plan.fp16) == (False, False, False)
    assert plan.dtype == plan.train_dtype == torch.float32 and plan.vllm_dtype == "float32"
    assert plan.load_kwargs(training=True) == {"dtype": torch.float32, "device_map": None}
    assert plan.describe().startswith("CPU: weights float32, training fp32")


def test_under_a_distributed_launch_the_trained_model_is_left_to_accelerate_and_every_other_load_goes_to_the_rank():
    rank1 = DevicePlan(**{**H100, "gpu_count": 2}, world_size=2, local_rank=1)
    # accelerate places (FSDP, ZeRO-3 shard) the model the trainer trains
    assert rank1.load_kwargs(training=True)["device_map"] is None
    # merging, perplexity, evaluation, frozen LoRA bases and 4-bit models: this rank's GPU, not the CPU
    assert rank1.load_kwargs()["device_map"] == {"": 1}
    assert rank1.load_kwargs(training=True, quantized=True)["device_map"] == {"": 1}
    assert rank1.device == "cuda:1"
    assert "rank 1 of 2" in rank1.describe()
    assert DevicePlan(world_size=2, local_rank=1).load_kwargs()["device_map"] is None  # CPU ranks (gloo)


def test_several_gpus_in_one_process_are_named_as_a_problem_for_grpo():
    assert "nn.DataParallel" in DevicePlan(**H100).describe()
    assert "nn.DataParallel" not in DevicePlan(**T4).describe()


def fake_cuda(monkeypatch, count, capability, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)


def test_device_plan_reads_torch_and_the_launcher_variables(monkeypatch):
    fake_cuda(monkeypatch, 1, (7, 5), "Tesla T4")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plan = device_plan()
    assert plan == DevicePlan(**T4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    fake_cuda(monkeypatch, 2, (8, 0), "NVIDIA A100")
    plan = device_plan()
    assert (plan.world_size, plan.local_rank, plan.bf16, plan.device_map()) == (2, 1, True, {"": 1})


def test_device_plan_on_this_machine_matches_torch():
    plan = device_plan()
    assert plan.on_gpu == torch.cuda.is_available()


def test_is_main_process_follows_rank(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert devices.is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not devices.is_main_process()


def test_fp32_precision_from_the_environment_turns_off_every_half_precision(monkeypatch):
    monkeypatch.setenv(devices.PRECISION_VARIABLE, "fp32")
    fake_cuda(monkeypatch, 1, (7, 5), "Tesla T4")
    plan = device_plan()
    assert (plan.fp32_only, plan.bf16, plan.fp16, plan.dtype, plan.train_dtype) == (
        True, False, False, torch.float32, torch.float32)
    assert plan.describe().endswith("training fp32 (HELPERS_PRECISION=fp32)")
    assert DevicePlan(**A100, fp32_only=True).dtype == torch.float32


def test_an_unknown_precision_is_one_sentence(monkeypatch):
    monkeypatch.setenv(devices.PRECISION_VARIABLE, "fp8")
    with pytest.raises(ValueError, match="HELPERS_PRECISION is 'fp8': set it to one of auto, fp32, or unset it."):
        device_plan()


def fake_driver(monkeypatch, version: str | None):
    """nvidia-smi answering with a driver version, or missing."""
    def run(command, **kwargs):
        if version is None:
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(command, 0, stdout=f"{version}\n", stderr="")

    monkeypatch.setattr(devices.subprocess, "run", run)


@pytest.mark.parametrize("torch_cuda, driver, expected", [
    (None, "570.124.06", "is a CPU-only build: install a CUDA build"),
    ("13.0", None, "no NVIDIA GPU is visible"),
    # Colab's driver (CUDA 12.8 level) under torch 2.13.0 from the package index (CUDA 13.0)
    ("13.0", "570.124.06", "needs NVIDIA driver 580.65 or newer, and this machine has 570.124.06"),
    ("12.8", "570.124.06", "cannot use the GPU beside driver 570.124.06"),
])
def test_a_gpu_profile_never_falls_back_to_the_cpu_and_says_why(monkeypatch, torch_cuda, driver, expected):
    fake_cuda(monkeypatch, 0, None, None)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    fake_driver(monkeypatch, driver)
    with pytest.raises(devices.NoGPUError) as raised:
        device_plan(profile="gpu-t4")
    message = str(raised.value)
    assert message.startswith("Profile gpu-t4 trains on a CUDA GPU, and ") and expected in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    # a CPU profile runs on the CPU as before
    assert device_plan(profile="cpu-smollm2").on_gpu is False
