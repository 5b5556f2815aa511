"""The multi-GPU path, proven on a CPU: `python -m helpers.gpu.launch` runs 02_sft_full in 2 processes with gloo.

The same command trains on several GPUs with the ddp, fsdp2 or zero3 configuration; here the cpu-ddp one
starts 2 processes with torchrun and the training arguments' use_cpu=True joins them in a gloo group.
"""
import json
import re
import subprocess
import sys

import pytest
import yaml

from helpers.gpu import launch
from helpers.paths import REPO_ROOT, RESULTS_DIR
from helpers.training.models import load_trained, models_dir

PROFILE = "smoke"


@pytest.fixture(scope="module")
def launched():
    """The smoke data (00, 01 in one process), then 02 launched on 2 CPU processes."""
    data = subprocess.run([sys.executable, "-m", "helpers", "--profile", PROFILE, "--only", "00", "01"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert data.returncode == 0, data.stdout[-2000:] + data.stderr[-2000:]
    trained = models_dir(PROFILE) / "sft_full"
    for stale in trained.glob("*"):
        stale.unlink()
    run = subprocess.run([sys.executable, "-m", "helpers.gpu.launch", "--profile", PROFILE, "--notebook", "02",
                          "--accelerate-config", "cpu-ddp"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=900)
    return run, trained


def test_both_ranks_train_in_one_gloo_group_and_the_saved_model_loads(launched):
    run, trained = launched
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # the rank report printed by each process of the launched script (helpers.devices.describe)
    # (found anywhere in the output: the two processes' lines can interleave)
    ranks = re.findall(r"rank (\d) of 2", run.stdout)
    assert sorted(ranks) == ["0", "1"], run.stdout[-2000:]
    metadata = json.loads((trained / "training_metadata.json").read_text())
    assert metadata["world_size"] == 2 and metadata["global_step"] > 0
    # the evaluation after training (cells tagged main-process) ran once, on rank 0, on the trained model
    scores = (RESULTS_DIR / PROFILE / "sft_full" / "dev_action_match.csv").read_text().splitlines()
    assert "dev_action_match_pct" in metadata and len(scores) > 1
    assert run.stdout.count("greedy action = expert action on") == 1
    model, tokenizer = load_trained(trained)
    assert sum(p.numel() for p in model.parameters()) == metadata["parameters"]
    assert tokenizer.decode(tokenizer("Send $5 to Ann.")["input_ids"]) == "Send $5 to Ann."


def test_the_launched_script_injects_the_profile_as_papermill_does_and_guards_main_process_cells():
    script = (RESULTS_DIR / PROFILE / "launch" / "02_sft_full.py").read_text()
    injected = script.split("# Parameters\n", 1)[1].split("# cell", 1)[0]  # papermill's injected cell
    assert 'profile = "smoke"' in injected and 'sft_max_steps = 3' in injected
    assert "if _is_main_process():\n" in script
    compile(script, "02_sft_full.py", "exec")


@pytest.mark.parametrize("bad, message", [
    (["--accelerate-config", "nonexistent"], "Unknown accelerate config 'nonexistent': choose one of"),
    (["--notebook", "05"], "does not train a model"),
    (["--profile", "nope"], "Unknown profile 'nope'"),
    (["--num-processes", "0"], "--num-processes must be 1 or more"),
    (["--notebook", "03", "--accelerate-config", "fsdp2"], "launch it with --accelerate-config ddp"),
])
def test_bad_input_is_one_sentence(bad, message, capsys):
    args = {"--profile": PROFILE, "--notebook": "02", "--accelerate-config": "cpu-ddp"}
    args.update(dict(zip(bad[::2], bad[1::2])))
    assert launch.main([item for pair in args.items() for item in pair] + ["--print-only"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_every_shipped_config_is_read_by_accelerate_and_its_nested_keys_are_launch_options():
    from accelerate.commands.launch import launch_command_parser

    options = {action.dest for action in launch_command_parser()._actions}
    assert set(launch.available_configs()) == {"cpu-ddp", "ddp", "fsdp2", "zero3"}
    for name in launch.available_configs():
        path = launch.resolve_config(name)
        config = yaml.safe_load(path.read_text())
        assert config["mixed_precision"] == "no", f"{name}: the device rule, not the config, picks bf16/fp16"
        for section in ("fsdp_config", "deepspeed_config"):
            unknown = set(config.get(section, {})) - options
            assert not unknown, f"{name}.yaml: accelerate launch has no option {sorted(unknown)}"
    assert yaml.safe_load(launch.resolve_config("fsdp2").read_text())["fsdp_config"]["fsdp_version"] == 2
    assert yaml.safe_load(launch.resolve_config("zero3").read_text())["deepspeed_config"]["zero_stage"] == 3


def test_a_config_accelerate_cannot_read_is_one_sentence(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnot_an_option: 1\n")
    with pytest.raises(launch.LaunchError, match="accelerate cannot read"):
        launch.resolve_config(str(broken))


def test_grpo_in_vllm_server_mode_gets_the_server_command_trl_builds(capsys):
    assert launch.main(["--profile", "gpu-qwen", "--notebook", "04", "--num-processes", "2", "--set", "use_vllm=true",
                        "--set", "vllm_mode=server",
                        "--set", "vllm_tensor_parallel_size=2", "--print-only"]) == 0
    out = capsys.readouterr().out
    server = next(line for line in out.splitlines() if "VLLM_SERVER_DEV_MODE=1" in line)
    assert " serve " in server and "gpu-qwen/models/sft_full" in server and "--tensor-parallel-size 2" in server
    assert launch.vllm_server_command({"profile": "gpu-qwen", "use_vllm": True, "vllm_mode": "colocate"}) is None


def fake_gpus(monkeypatch, count):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_the_process_count_defaults_to_the_gpus_present(monkeypatch):
    fake_gpus(monkeypatch, 4)
    command, _, _ = launch.prepare("gpu-qwen", "02", "ddp")
    assert command[command.index("--num_processes") + 1] == "4"
    command, _, _ = launch.prepare("gpu-qwen", "02", "ddp", num_processes=2)
    assert command[command.index("--num_processes") + 1] == "2"
    # the CPU configuration keeps its own 2 processes
    assert "--num_processes" not in launch.prepare(PROFILE, "02", "cpu-ddp")[0]


def test_a_gpu_launch_without_a_gpu_is_one_sentence(monkeypatch):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(launch.LaunchError) as raised:
        launch.prepare("gpu-qwen", "02", "ddp")
    message = str(raised.value)
    assert message.startswith("No GPU to launch on: ") and "cpu-ddp" in message and message.count(". ") == 0
