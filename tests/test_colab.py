"""Every notebook starts with its Colab set-up cell, which does nothing off Colab; on Colab (stood in for here) it
installs beside Colab's own packages, refuses a CPU for a GPU profile, keeps data/ and results/ on Drive, finds or
rebuilds the inputs, and applies the profile."""
import os
import subprocess
import sys
import types
from importlib import metadata

import nbformat
import pytest
import torch

from helpers import devices, paths
from helpers.course import colab
from helpers.course.profiles import load_profile

NOTEBOOKS = colab.notebooks()
FORK = "https://github.com/someone/app-agents-from-scratch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_its_colab_cell(path):
    notebook = nbformat.read(path, as_version=4)
    first = colab.first_code_cell(notebook)
    assert first.source == colab.cell_for(path.stem), f"{path.name}: run `python -m helpers.course.colab`"
    assert colab.COLAB_TAG in first.metadata["tags"]
    # the parameters cell follows it, so papermill still injects after the notebook's own defaults
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[1].metadata.get("tags", [])
    # the repository's address reaches a notebook only through the cell, which is made from REPOSITORY
    assert not any("github.com/" in cell.source for cell in notebook.cells if cell is not first)


def test_off_colab_the_cell_only_defines_its_two_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(colab.cell_for("02_sft_full"), "colab-cell", "exec"), namespace)
    assert os.getcwd() == str(tmp_path) and not list(tmp_path.iterdir())
    assert namespace["PROFILE"] == "gpu-t4" and namespace["USE_DRIVE"] is None
    assert "set_up" not in namespace


def test_writing_the_cells_again_changes_nothing():
    assert colab.write_cells() == []


def run_cell_on_colab(monkeypatch, source):
    """Execute a cell as Colab would: google.colab imported, git and the set-up stood in for."""
    commands, calls = [], []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: commands.append(command))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(("chdir", path)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(colab, "set_up", lambda *args: calls.append(("set_up", *args)))
    exec(compile(source, "colab-cell", "exec"), {})
    return commands, calls


def test_with_the_placeholder_address_the_cell_stops_with_one_sentence(monkeypatch):
    with pytest.raises(SystemExit) as stopped:
        run_cell_on_colab(monkeypatch, colab.cell_for("02_sft_full"))
    assert str(stopped.value).startswith("The set-up cell names the placeholder repository ")
    assert "REPOSITORY in helpers/course/colab.py" in str(stopped.value)


def test_a_fork_sets_one_address_and_the_cell_and_the_badges_follow(monkeypatch):
    monkeypatch.setattr(colab, "REPOSITORY", FORK)
    monkeypatch.setattr(os.path, "isdir", lambda path: False)
    commands, calls = run_cell_on_colab(monkeypatch, colab.cell_for("03_sft_lora"))
    assert commands == [["git", "clone", "--depth", "1", FORK, "/content/app-agents-from-scratch"]]
    assert calls == [("chdir", "/content/app-agents-from-scratch/notebooks"), ("set_up", "gpu-t4", "03_sft_lora", None)]
    assert "colab.research.google.com/github/someone/app-agents-from-scratch/blob/main/notebooks/03_sft_lora.ipynb" \
        in colab.badges()


def fake_installed(monkeypatch, versions):
    def version(name):
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(colab.metadata, "version", version)


def test_the_install_holds_colabs_torch_and_kernel_packages_where_they_are(monkeypatch, tmp_path):
    fake_installed(monkeypatch, {"torch": "2.11.0+cu128", "ipykernel": "6.17.1", "pandas": "2.2.2"})
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    runs, killed = [], []
    monkeypatch.setattr(colab.subprocess, "run",
                        lambda command, **kw: runs.append(command) or subprocess.CompletedProcess(command, 0, "", ""))
    monkeypatch.setattr(colab.os, "kill", lambda pid, signal: killed.append(signal))
    colab.install_once()
    (command,) = runs
    assert command[command.index("-r") + 1] == "requirements-colab.txt"
    constraints = open(command[command.index("-c") + 1]).read().splitlines()
    assert constraints == ["torch==2.11.0+cu128", "pandas==2.2.2", "ipykernel==6.17.1"]
    assert killed == [9] and (tmp_path / colab.INSTALLED_MARKER).exists()
    colab.install_once()  # once per runtime: after the restart nothing is installed again
    assert len(runs) == 1


def test_an_install_that_would_replace_them_stops_with_one_sentence(monkeypatch, tmp_path):
    fake_installed(monkeypatch, {"torch": "2.11.0+cu128"})
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(colab.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, "", "ERROR: Cannot install x because these package versions have conflicting dependencies."))
    with pytest.raises(colab.ColabSetupError) as stopped:
        colab.install_once()
    assert str(stopped.value).startswith("pip could not install requirements-colab.txt beside Colab's own torch")
    assert not (tmp_path / colab.INSTALLED_MARKER).exists()


def test_a_gpu_profile_on_a_runtime_whose_torch_sees_no_gpu_stops_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(devices, "nvidia_driver_version", lambda: "570.124.06")
    with pytest.raises(colab.ColabSetupError) as stopped:
        colab.require_gpu("gpu-t4")
    assert "needs NVIDIA driver 580.65 or newer, and this machine has 570.124.06" in str(stopped.value)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """data/ and results/ of a repository in tmp_path, and a Drive beside it."""
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "app-agents-from-scratch")
    monkeypatch.setattr(paths, "DATA_DIR", paths.REPO_ROOT / "data")
    monkeypatch.setattr(paths, "RESULTS_DIR", paths.REPO_ROOT / "results")
    return tmp_path


def test_data_and_results_of_the_profile_live_on_drive_and_what_was_there_is_kept(repo):
    (paths.RESULTS_DIR / "gpu-t4").mkdir(parents=True)
    (paths.RESULTS_DIR / "gpu-t4" / "old.csv").write_text("x")
    (paths.DATA_DIR / "examples").mkdir(parents=True)  # committed files stay where they are
    folders = colab.keep_on_drive("gpu-t4", drive_root=repo / "drive")
    assert folders == [repo / "drive/app-agents-from-scratch/data/gpu-t4",
                       repo / "drive/app-agents-from-scratch/results/gpu-t4"]
    (paths.DATA_DIR / "gpu-t4" / "tasks.jsonl").write_text("{}")
    assert (folders[0] / "tasks.jsonl").read_text() == "{}"
    assert (paths.RESULTS_DIR / "gpu-t4-before-drive" / "old.csv").exists()
    assert (paths.DATA_DIR / "examples").is_dir() and not (paths.DATA_DIR / "examples").is_symlink()
    colab.keep_on_drive("gpu-t4", drive_root=repo / "drive")  # a second notebook's runtime: the same links
    assert (paths.DATA_DIR / "gpu-t4" / "tasks.jsonl").exists()


def test_a_notebook_opened_alone_rebuilds_the_cheap_inputs_or_names_the_notebook_to_run_first(repo):
    assert colab.missing_inputs("gpu-t4", "00_world_tour") == (False, None)
    assert colab.missing_inputs("gpu-t4", "01_data_generation") == (False, None)
    assert colab.missing_inputs("gpu-t4", "02_sft_full") == (True, None)
    rebuild, stop = colab.missing_inputs("gpu-t4", "04_grpo")
    assert rebuild and stop.startswith("04_grpo needs a model that an earlier notebook trains")
    assert "run 02_sft_full first" in stop and stop.count(". ") == 0
    for written in ("data/gpu-t4/tasks/test_normal.jsonl", "data/gpu-t4/datasets/stepwise_train.jsonl",
                    "results/gpu-t4/models/sft_full/config.json"):
        (paths.REPO_ROOT / written).parent.mkdir(parents=True, exist_ok=True)
        (paths.REPO_ROOT / written).write_text("{}")
    assert colab.missing_inputs("gpu-t4", "04_grpo") == (False, None)
    assert colab.missing_inputs("gpu-t4", "06_finetuned_inference") == (False, None)


def test_rebuilding_runs_00_and_01_with_the_pipeline(repo, monkeypatch):
    runs = []
    monkeypatch.setattr(colab.subprocess, "run", lambda command, **kw: runs.append(command))
    colab.prepare_inputs("gpu-t4", "05_base_inference")
    assert runs == [[sys.executable, "-m", "helpers", "--profile", "gpu-t4", "--only", "00", "01"]]
    with pytest.raises(colab.ColabSetupError, match="run 02_sft_full first"):
        colab.prepare_inputs("gpu-t4", "06_finetuned_inference")


@pytest.mark.parametrize("profile, use_drive, mounted", [("gpu-t4", None, True), ("cpu-tiny", None, False),
                                                         ("gpu-t4", False, False), ("cpu-tiny", True, True)])
def test_set_up_does_its_steps_in_order_and_uses_drive_by_default_for_gpu_profiles(monkeypatch, profile, use_drive,
                                                                                   mounted):
    steps = []
    drive = types.ModuleType("google.colab.drive")
    drive.mount = lambda where: steps.append(("mount", where))
    google_colab = types.ModuleType("google.colab")
    google_colab.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    for name in ("install_once", "require_gpu", "keep_on_drive", "prepare_inputs", "use_profile"):
        monkeypatch.setattr(colab, name, lambda *args, name=name: steps.append((name, *args)))
    colab.set_up(profile, "02_sft_full", use_drive)
    expected = [("install_once",)] + ([("require_gpu", profile)] if profile.startswith("gpu-") else [])
    expected += [("mount", "/content/drive"), ("keep_on_drive", profile)] if mounted else []
    assert steps == expected + [("prepare_inputs", profile, "02_sft_full"), ("use_profile", profile)]


class FakeShell:
    """The part of IPython's shell that use_profile touches."""

    def __init__(self):
        self.user_ns, self.hooks = {}, []
        self.events = types.SimpleNamespace(register=lambda name, f: self.hooks.append(f),
                                            unregister=lambda name, f: self.hooks.remove(f))

    def run_cell(self, source):
        exec(source, self.user_ns)
        for hook in list(self.hooks):
            hook(types.SimpleNamespace(info=types.SimpleNamespace(raw_cell=source)))


def test_on_colab_the_profile_replaces_the_parameters_cell_values_as_papermill_would(monkeypatch, capsys):
    shell = FakeShell()
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    colab.use_profile("gpu-t4")
    shell.run_cell("import math")  # an ordinary cell leaves the hook in place
    parameters = 'profile = "cpu-tiny"\nseed = 1\nbase_model = "tiny"\nsft_epochs = 4\nnot_in_profile = 3\n'
    shell.run_cell(parameters)
    t4 = load_profile("gpu-t4")
    assert shell.user_ns["profile"] == "gpu-t4" and shell.user_ns["base_model"] == t4["base_model"]
    assert (shell.user_ns["seed"], shell.user_ns["sft_epochs"]) == (t4["seed"], t4["sft_epochs"])
    assert shell.user_ns["not_in_profile"] == 3 and not shell.hooks
    assert "profile gpu-t4:" in capsys.readouterr().out


def test_every_page_with_badge_markers_shows_the_current_badges_and_the_gpu_guide_has_them():
    pages = [page for page in colab.badge_pages() if page.exists() and "<!-- colab-badges:start -->" in page.read_text()]
    assert colab.GUIDE in pages
    for page in pages:
        assert f"<!-- colab-badges:start -->\n{colab.badges()}\n<!-- colab-badges:end -->" in page.read_text(), \
            f"{page.name}: run `python -m helpers.course.colab`"
