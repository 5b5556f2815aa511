"""A notebook opened in Jupyter without a profile runs the default profile: its parameter defaults are that profile's."""
from helpers.course.notebook_defaults import drifted
from helpers.course.pipeline import DEFAULT_PROFILE


def test_every_notebooks_defaults_are_the_default_profiles_values():
    assert drifted() == {}, (f"parameters whose defaults differ from profile {DEFAULT_PROFILE}: run "
                             f"`python -m helpers.course.notebook_defaults` to write them")


def test_a_drifted_default_is_found_and_written_back_with_its_comment(tmp_path):
    import shutil

    import nbformat

    from helpers.course.notebook_defaults import parameters_cell, sync
    from helpers.paths import NOTEBOOKS_DIR

    path = tmp_path / "06_finetuned_inference.ipynb"
    shutil.copy(NOTEBOOKS_DIR / path.name, path)
    notebook = nbformat.read(path, as_version=4)
    cell = parameters_cell(notebook)
    original = cell.source
    cell.source = original.replace('inference_backend = "transformers"', 'inference_backend = "vllm"')
    chat_line = next(line for line in original.splitlines() if line.startswith("chat_max_new_tokens = 320 "))
    cell.source = cell.source.replace("chat_max_new_tokens = 320", "chat_max_new_tokens = 999")
    assert cell.source != original
    nbformat.write(notebook, path)
    assert drifted("cpu-smollm2", [path]) == {path.name: ["chat_max_new_tokens"]}  # inference_backend: not in the profile
    assert drifted("smoke", [path])[path.name]  # another profile's values differ too
    assert sync("cpu-smollm2", [path]) == [path.name]
    assert drifted("cpu-smollm2", [path]) == {}
    source = parameters_cell(nbformat.read(path, as_version=4)).source
    assert chat_line in source.splitlines()  # the profile's value, its comment in its column
    assert 'inference_backend = "vllm"   # transformers | vllm (GPU)' in source  # not the profile's: left, comment kept
