"""The device/dtype decision for a T4, an A100, an H100, a CPU, and ranks of a distributed launch."""
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
    assert plan.load_kwargs(quantized=True) == {"dtype": torch.float16, "device_map": "auto"}


@pytest.mark.parametrize("gpu", [A100, H100], ids=["A100", "H100"])
def test_ampere_and_newer_get_bf16_everywhere(gpu):
    plan = DevicePlan(**gpu)
    assert (plan.bf16, plan.fp16) == (True, False)
    assert plan.dtype == plan.train_dtype == torch.bfloat16 and plan.vllm_dtype == "bfloat16"


def test_bf16_can_be_turned_off_and_fp16_takes_its_place():
    plan = DevicePlan(**A100, allow_bf16=False)
    assert (plan.bf16, plan.fp16, plan.dtype) == (False, True, torch.float16)


def test_a_cpu_with_native_bf16_trains_fp32_weights_under_bf16_autocast_and_infers_in_bf16():
    plan = DevicePlan(cpu_bf16=True)
    assert (plan.on_gpu, plan.bf16, plan.fp16) == (False, True, False)
    assert plan.train_dtype == torch.float32 and plan.dtype == torch.bfloat16
    assert plan.load_kwargs(training=True) == {"dtype": torch.float32, "device_map": None}
    assert plan.load_kwargs() == {"dtype": torch.bfloat16, "device_map": None}
    assert plan.describe() == "CPU: weights bfloat16, training bf16 autocast"
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


def test_under_a_distributed_launch_accelerate_places_the_model_except_4_bit_ones():
    rank1 = DevicePlan(**{**H100, "gpu_count": 2}, world_size=2, local_rank=1)
    assert rank1.device_map() is None
    assert rank1.device_map(quantized=True) == {"": 1}
    assert "rank 1 of 2" in rank1.describe()


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
    assert (plan.world_size, plan.local_rank, plan.bf16, plan.device_map()) == (2, 1, True, None)


def test_device_plan_on_this_machine_matches_torch():
    plan = device_plan()
    assert plan.on_gpu == torch.cuda.is_available()


def test_is_main_process_follows_rank(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert devices.is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not devices.is_main_process()
