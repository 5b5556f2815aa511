"""Every notebook starts with the Colab set-up cell, which does nothing off Colab and applies a profile on it."""
import os
import types

import nbformat
import pytest

from helpers import paths
from helpers.course import colab
from helpers.course.profiles import load_profile

NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_colab_cell(path):
    notebook = nbformat.read(path, as_version=4)
    first = colab.first_code_cell(notebook)
    assert first.source == colab.CELL, f"{path.name}: run `python -m helpers.course.colab`"
    assert colab.COLAB_TAG in first.metadata["tags"]
    # the parameters cell follows it, so papermill still injects after the notebook's own defaults
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[1].metadata.get("tags", [])


def test_off_colab_the_cell_only_defines_its_two_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(colab.CELL, "colab-cell", "exec"), namespace)
    assert os.getcwd() == str(tmp_path) and not list(tmp_path.iterdir())
    assert namespace["PROFILE"] == "gpu-t4" and namespace["RESULTS_ON_DRIVE"] is False
    assert "use_profile" not in namespace


def test_writing_the_cells_again_changes_nothing():
    assert colab.write_cells() == []


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


def test_the_readme_has_a_colab_badge_for_every_notebook():
    readme = (paths.REPO_ROOT / "README.md").read_text()
    assert colab.badges() in readme
