"""The GPU requirement sets are written from the CPU core pins and resolve with pip, wheels only, for Python 3.11,
3.12 and 3.13 (it needs only the package index).

Each set resolves with `pip install --dry-run --only-binary=:all: --python-version X --target ...`: the GPU set with
DeepSpeed's declared requirements (the multi-GPU set; DeepSpeed itself ships only a source archive, whose metadata pip
builds once here), the Colab set beside the packages a Colab GPU runtime keeps, and the vLLM set on its own. pip
reads this machine's own configuration except local wheel folders and constraint files (here a CPU build of torch
sits in one), so the check resolves what a CUDA machine installs from the index.
"""
import json
import os
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
import urllib.error
import urllib.request

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.course.colab import COLAB_KEEPS
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


def test_requirements_colab_txt_is_written_from_the_core_and_its_gpu_changes():
    assert requirement_sets.COLAB.read_text() == requirement_sets.colab_set(), \
        "requirements-colab.txt is out of date: run `python -m helpers.gpu.requirement_sets`."


def test_the_gpu_set_keeps_every_core_pin_and_adds_bitsandbytes_but_no_vllm():
    core, gpu = pinned(requirement_sets.CORE), pinned(requirement_sets.GPU)
    # the notebooks' keywords are checked against the installed core: a GPU runs the same versions
    assert {name: gpu[name] for name in core} == core
    assert set(gpu) - set(core) == {"bitsandbytes"} and "unsloth" not in gpu
    # TRL imports vLLM whenever it is installed: it lives in its own environment (requirements-vllm.txt)
    assert "vllm" not in gpu and "vllm" in pinned(requirement_sets.VLLM)


def test_the_colab_set_leaves_colabs_torch_and_kernel_packages_alone():
    core, colab = pinned(requirement_sets.CORE), pinned(requirement_sets.COLAB)
    kept = {canonicalize_name(name) for name in COLAB_KEEPS}
    assert not kept & set(colab)
    assert {"torch", "numpy", "pandas", "ipykernel", "ipywidgets", "matplotlib"} <= kept
    assert {name: colab[name] for name in set(colab) & set(core)} == {name: core[name] for name in set(colab) & set(core)}
    assert {"transformers", "trl", "peft", "accelerate", "bitsandbytes", "papermill"} <= set(colab)


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


# A Colab GPU runtime's versions of the packages Colab keeps (googlecolab/backend-info, pip-freeze.gpu.txt of
# August 2026: Python 3.13, torch 2.11.0+cu128 on a CUDA 12.8 driver); the public version stands for torch's build.
COLAB_RUNTIME = """\
torch==2.11.0
torchvision==0.26.0
torchaudio==2.11.0
numpy==2.1.3
pandas==2.2.3
matplotlib==3.10.0
ipykernel==6.17.1
ipython==7.34.0
ipywidgets==7.7.1
jupyter-client==7.4.9
jupyter-core==5.9.1
jupyter-server==2.20.0
notebook==6.5.7
tornado==6.5.7
traitlets==5.7.1
"""


# Each set for one Python version by default (each version once, Colab's 3.13 for the Colab set): 3 to 5 minutes
# here, as fast as the index answers. GPU_SETS_ALL_PYTHONS=1 resolves every set for every version (nine dry runs,
# about 10 minutes).
ALL_PYTHONS = "GPU_SETS_ALL_PYTHONS"
DEFAULT_JOBS = (("multigpu", "3.11"), ("colab", "3.13"), ("vllm", "3.12"))


# fast-deps reads a wheel's metadata with HTTP range requests where the index serves no metadata file; without it
# pip downloads such wheels whole (bitsandbytes, and torch's NVIDIA libraries of several GB). It slows the vLLM set,
# whose wheels all have metadata files.
FAST_DEPS = {"multigpu": True, "colab": True, "vllm": False}


def resolve(env, work, label, python, arguments) -> dict:
    """pip's dry run for one set and one Python version: the chosen versions by name, or the tail of pip's error."""
    report = work / f"{label}-{python}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--only-binary=:all:",
               *(["--use-feature=fast-deps"] if FAST_DEPS[label] else []),
               "--python-version", python, "--target", str(work / f"target-{label}-{python}"), "--report", str(report),
               *arguments]
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        return {"error": f"`pip {' '.join(command[3:])}` does not resolve:\n{run.stderr[-3000:]}"}
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def deepspeed_requirements(env, work) -> list[str]:
    """DeepSpeed's declared requirements, read from the metadata pip builds from its source archive."""
    (version,) = [spec for text, _ in requirement_sets.pins(requirement_sets.MULTIGPU)
                  if (spec := Requirement(text)).name == "deepspeed"]
    report = work / "deepspeed.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
                          "--ignore-installed", "--report", str(report), str(version)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    declared = json.loads(report.read_text())["install"][0]["metadata"]["requires_dist"]
    return [text for text in declared if "extra ==" not in text]


def test_every_set_resolves_with_wheels_for_python_3_11_to_3_13(tmp_path):
    env = pip_environment()
    if not index_reachable(env):
        pytest.skip("the package index is unreachable, so the GPU sets cannot be resolved here")
    (tmp_path / "colab-runtime.txt").write_text(COLAB_RUNTIME)
    sets = {
        "multigpu": ["-r", "requirements-gpu.txt", *deepspeed_requirements(env, tmp_path)],
        "colab": ["-r", "requirements-colab.txt", "-c", str(tmp_path / "colab-runtime.txt")],
        "vllm": ["-r", "requirements-vllm.txt"],
    }
    jobs = [(label, python) for label in sets for python in requirement_sets.PYTHONS]
    if os.environ.get(ALL_PYTHONS) != "1":
        jobs = list(DEFAULT_JOBS)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:  # the index, not this machine, sets the pace
        results = dict(zip(jobs, pool.map(lambda job: resolve(env, tmp_path, *job, sets[job[0]]), jobs)))
    errors = [result["error"] for result in results.values() if "error" in result]
    assert not errors, "\n\n".join(errors)
    gpu, colab, vllm = (pinned(path) for path in (requirement_sets.GPU, requirement_sets.COLAB, requirement_sets.VLLM))
    runtime = {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in COLAB_RUNTIME.split()}
    for (label, python), chosen in results.items():
        wanted = {"multigpu": gpu, "colab": colab, "vllm": vllm}[label]
        assert {name: chosen.get(name) for name in wanted} == wanted, (label, python)
        if label == "multigpu":  # torch from the index: the CUDA build, with the NVIDIA libraries it runs on
            assert any(name.startswith("nvidia-") for name in chosen), python
        if label == "colab":  # nothing Colab keeps is replaced: what the set pulls in of them is Colab's version
            assert {name: version for name, version in chosen.items() if name in runtime} == \
                {name: runtime[name] for name in chosen if name in runtime}, python
            assert chosen.get("torch") == "2.11.0", python
