"""The GPU requirement sets are written from the CPU core pins and resolve with pip (it needs only the package index).

The resolution runs `pip install --dry-run --ignore-installed` on requirements-multigpu.txt, which includes
requirements-gpu.txt: if the larger set resolves, so does the smaller one. pip reads this machine's own
configuration except local wheel folders and constraint files (here a CPU build of torch sits in one), so the
check resolves what a CUDA machine installs from the index: torch's CUDA build and its NVIDIA libraries.
"""
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.gpu import requirement_sets
from helpers.paths import REPO_ROOT

# pip options that carry over from this machine's configuration; find-links, constraint and extra indexes
# point at local folders of prebuilt wheels, which a GPU machine does not have.
CARRIED_OVER = {"index-url", "cert", "client-cert", "trusted-host", "proxy", "timeout", "default-timeout", "retries"}


def pinned(path):
    return {canonicalize_name(Requirement(text).name): str(Requirement(text).specifier)[2:]
            for text, _ in requirement_sets.pins(path)}


def test_requirements_gpu_txt_is_written_from_the_core_and_its_gpu_changes():
    assert requirement_sets.GPU.read_text() == requirement_sets.gpu_set(), \
        "requirements-gpu.txt is out of date: run `python -m helpers.gpu.requirement_sets`."


def test_the_gpu_set_keeps_every_core_pin_but_the_declared_changes():
    core, gpu, changes = (pinned(p) for p in (requirement_sets.CORE, requirement_sets.GPU, requirement_sets.CHANGES))
    assert set(core) <= set(gpu)
    differing = {name for name in core if core[name] != gpu[name]}
    assert differing == set(changes) & set(core) == {"numpy"}
    # the core libraries the notebooks' keywords are checked against are the same versions on a GPU
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        assert gpu[name] == core[name]
    assert {"vllm", "bitsandbytes"} <= set(gpu) and "unsloth" not in gpu


def test_a_pin_that_is_not_exact_is_refused_with_its_line(tmp_path):
    loose = tmp_path / "requirements-gpu.in"
    loose.write_text("# comment\nvllm>=0.30\n")
    with pytest.raises(ValueError, match="line 2: pin vllm with =="):
        requirement_sets.pins(loose)


def pip_environment() -> dict:
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        option = key.split(".", 1)[-1]
        if option in CARRIED_OVER:
            env["PIP_" + option.upper().replace("-", "_")] = value.strip().strip("'\"")
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def index_reachable(env) -> bool:
    url = env.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + "/pip/"
    context = ssl.create_default_context(cafile=env.get("PIP_CERT"))
    try:
        urllib.request.urlopen(url, timeout=20, context=context)
        return True
    except (urllib.error.URLError, OSError):
        return False


def test_the_gpu_and_multigpu_sets_resolve_with_pip(tmp_path):
    env = pip_environment()
    if not index_reachable(env):
        pytest.skip("the package index is unreachable, so the GPU sets cannot be resolved here")
    report = tmp_path / "report.json"
    # fast-deps reads each wheel's metadata with HTTP range requests: without it, pip downloads every
    # candidate wheel whole (torch and the NVIDIA libraries are several GB) when the index serves no metadata files
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--use-feature=fast-deps", "--report", str(report), "-r", "requirements-multigpu.txt"]
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"`{' '.join(command[2:])}` does not resolve:\n{run.stderr[-4000:]}"
    chosen = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    wanted = {**pinned(requirement_sets.GPU), "deepspeed": pinned(REPO_ROOT / "requirements-multigpu.txt")["deepspeed"]}
    assert {name: chosen.get(name) for name in wanted} == wanted
    # torch from the index, with the CUDA libraries vLLM and bitsandbytes run on
    assert any(name.startswith("nvidia-") for name in chosen)
