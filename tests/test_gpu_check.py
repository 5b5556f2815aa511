"""`python -m helpers.gpu.check --dry-run`: every step a CPU can run does run, on the tiny model, so the GPU check
cannot rot; what needs a GPU or a missing library is skipped with the reason, and a failing step is reported."""
import json
from pathlib import Path

import pytest
import torch

from helpers.devices import DevicePlan
from helpers.gpu import check

T4 = DevicePlan(gpu_count=1, capability=(7, 5), gpu_name="Tesla T4")
SIGNATURES = json.loads((Path(__file__).parent / "fixtures" / "gpu_api" / "signatures.json").read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    code = check.main(["--dry-run", "--out", str(out)])
    return code, json.loads(out.read_text())


def test_the_dry_run_runs_every_step_a_cpu_can_and_each_is_finite(dry_run):
    code, report = dry_run
    assert code == 0 and report["dry_run"] is True
    steps = {step["step"]: step for step in report["steps"]}
    assert list(steps) == [name for name, _ in check.STEPS]
    ran = {"device plan", "tiny model", "full SFT step", "LoRA step", "GRPO step (transformers)", "four evaluated tasks"}
    assert {name for name, step in steps.items() if step["status"] == "ok"} == ran
    for name in ("tiny model", "full SFT step", "LoRA step", "GRPO step (transformers)"):
        assert steps[name]["finite"] is True and steps[name]["loss"] is not None and steps[name]["seconds"] > 0
    # full SFT keeps fp32 master weights; LoRA trains fp32 adapters
    assert steps["full SFT step"]["note"] == steps["LoRA step"]["note"] == "trainable in float32"
    assert steps["four evaluated tasks"]["note"].startswith(f"{check.TASK_COUNT} tasks, ")
    for name in ("QLoRA step", "vLLM generation", "GRPO step (colocated vLLM)", "vLLM served (own environment)"):
        assert steps[name]["status"] == "skipped" and steps[name]["note"] == "needs a CUDA GPU"
    assert report["versions"]["torch"] == torch.__version__


def test_the_report_is_a_table_with_a_row_per_step(dry_run):
    _, report = dry_run
    rows = check.table(report).splitlines()
    assert rows[0] == "| step | status | seconds | peak GPU GiB | loss | finite | note |"
    assert len(rows) == 2 + len(check.STEPS) and rows[2].startswith("| device plan | ok |")


def test_without_a_gpu_the_real_check_refuses_in_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check.main([]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("The GPU check needs a CUDA GPU, and ") and error.endswith("(--dry-run runs it on the CPU).")


def test_a_step_whose_library_is_missing_is_skipped_with_the_reason(monkeypatch, tmp_path):
    real = check.importlib.util.find_spec
    monkeypatch.setattr(check.importlib.util, "find_spec", lambda name: None if name in ("bitsandbytes", "vllm")
                        else real(name))
    context = check.Context(T4, check.GPU_SIZES, False, tmp_path)
    qlora = check.run_step("QLoRA step", check.step_qlora, context)
    assert (qlora.status, qlora.note) == ("skipped", "bitsandbytes is not installed (requirements-gpu.txt installs it)")
    vllm = check.run_step("vLLM generation", check.step_vllm_generation, context)
    assert vllm.status == "skipped" and vllm.note.startswith("vllm is not installed in this environment")


def test_a_failing_step_is_recorded_and_a_non_finite_loss_fails_the_step(tmp_path):
    context = check.Context(DevicePlan(), check.DRY_SIZES, True, tmp_path)

    def broken(context):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore")

    failed = check.run_step("broken", broken, context)
    assert failed.status == "failed" and failed.note.startswith("RuntimeError: CUDA error: no kernel image")
    nan = check.run_step("nan", lambda context: check.finite_outcome(float("nan")), context)
    assert (nan.status, nan.finite) == ("failed", False)


def test_the_served_vllm_command_uses_options_the_pinned_vllm_has():
    command = check.vllm_serve_command("/venv-vllm/bin/python", Path("/models/smollm2"), 8001, T4)
    engine_options = {option[2:].replace("-", "_") for option in command if option.startswith("--")} - {"host", "port"}
    assert engine_options <= set(SIGNATURES["vllm"]["EngineArgs"]["fields"])
    assert command[command.index("--dtype") + 1] == "float16"  # a T4: no bf16


def test_the_grpo_step_plays_whole_episodes():
    import inspect

    from trl import GRPOTrainer

    assert "rollout_func" in inspect.signature(GRPOTrainer.__init__).parameters
    assert "rollout_func=rollout_func" in inspect.getsource(check._grpo_step)
