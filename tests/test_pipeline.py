"""Behaviour of the profile loader and the notebook pipeline, on small throw-away notebooks."""
import json
import subprocess
import sys

import nbformat
import pytest

from helpers import paths
from helpers.pipeline import main, run_pipeline
from helpers.profiles import ProfileError, load_profile


def write_notebook(folder, name, parameters, body):
    """Write notebook `name` with an optional cell tagged `parameters` followed by one code cell."""
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_code_cell(body))
    nbformat.write(nb, folder / name)


# Appends the notebook's name to a log, so a test can see which notebooks ran and in what order.
LOG_RUN = "import pathlib\nwith open(pathlib.Path(out_dir) / 'ran.log', 'a') as f:\n    f.write('{name}\\n')"


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A temporary repository layout: notebooks/, profiles/ and results/, with profile `t`."""
    for name in ("notebooks", "profiles", "results", "out"):
        (tmp_path / name).mkdir()
    # The pipeline reads these at call time, so pointing them elsewhere isolates the real repository.
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(paths, "PROFILES_DIR", tmp_path / "profiles")
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "profiles" / "t.yaml").write_text(
        f"seed: 7\nlr: 0.5\nunrelated: nope\nout_dir: {tmp_path / 'out'}\n"
    )
    (tmp_path / "profiles" / "other.yaml").write_text("seed: 1\n")
    return tmp_path


def test_unknown_profile_is_one_sentence_listing_the_profiles(course, capsys):
    with pytest.raises(ProfileError) as err:
        load_profile("gpu-foo")
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert message.startswith("Unknown profile 'gpu-foo': choose one of other, t ")
    assert "\n" not in message and message.endswith(".")

    assert main(["--profile", "gpu-foo"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and "Traceback" not in captured.err


def test_cli_unknown_profile_exits_2_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "no-such-profile"],
        cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("Unknown profile 'no-such-profile'")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("seed: [1,\n", "not valid YAML"),
        ("- 1\n- 2\n", "must contain a mapping"),
        ("lr: 0.1\n", "must set seed to an integer"),
        ("seed: true\n", "must set seed to an integer"),
    ],
)
def test_unusable_profile_file_is_one_sentence_naming_it(course, text, fragment):
    (course / "profiles" / "bad.yaml").write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile("bad")
    message = str(err.value)
    assert "bad.yaml" in message and fragment in message and "\n" not in message


def test_loader_adds_the_profile_name(course):
    assert load_profile("t")["profile"] == "t"


def test_only_declared_parameters_are_injected_and_run_is_recorded(course):
    write_notebook(
        course / "notebooks", "00_params.ipynb",
        "seed = 0\nlr = 1.0\nprofile = ''\nout_dir = ''",
        "import json, pathlib, sys\n"
        "received = {'seed': seed, 'lr': lr, 'profile': profile, 'python': sys.executable,\n"
        "            'has_unrelated': 'unrelated' in globals()}\n"
        "pathlib.Path(out_dir, 'received.json').write_text(json.dumps(received))",
    )
    records = run_pipeline("t")

    received = json.loads((course / "out" / "received.json").read_text())
    # The kernel must be the interpreter running the tests, i.e. the project's virtualenv.
    assert received == {"seed": 7, "lr": 0.5, "profile": "t", "python": sys.executable, "has_unrelated": False}
    executed = nbformat.read(course / "results" / "t" / "notebooks" / "00_params.ipynb", as_version=4)
    injected = [c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "unrelated" not in injected[0]

    assert [(r["notebook"], r["status"]) for r in records] == [("00_params", "ok")]
    run = json.loads((course / "results" / "t" / "pipeline.json").read_text())
    assert run["status"] == "ok" and run["profile"] == "t"
    assert run["parameters"]["seed"] == 7 and run["parameters"]["unrelated"] == "nope"
    assert run["notebooks"][0]["parameters"] == ["lr", "out_dir", "profile", "seed"]
    assert isinstance(run["notebooks"][0]["seconds"], float)
    assert run["python"] and run["started_at"] and run["git_commit"]


def test_set_overrides_a_profile_value_for_one_run_and_records_it(course):
    write_notebook(
        course / "notebooks", "00_params.ipynb", "seed = 0\nlr = 1.0\nout_dir = ''",
        "import json, pathlib\npathlib.Path(out_dir, 'received.json').write_text(json.dumps({'seed': seed, 'lr': lr}))",
    )
    assert main(["--profile", "t", "--set", "lr=0.25", "--set", "seed=3"]) == 0

    # values are read as YAML, like the profile file: numbers stay numbers
    assert json.loads((course / "out" / "received.json").read_text()) == {"seed": 3, "lr": 0.25}
    run = json.loads((course / "results" / "t" / "pipeline.json").read_text())
    assert run["overrides"] == {"lr": 0.25, "seed": 3} and run["parameters"]["lr"] == 0.25
    assert load_profile("t")["lr"] == 0.5  # the profile file is untouched


@pytest.mark.parametrize(
    "pair, fragment",
    [("lr", "write it as NAME=VALUE"), ("2x=1", "write it as NAME=VALUE"), ("typo_rate=1", "typo_rate"),
     ("lr=[1", "Cannot read the value")],
)
def test_bad_set_is_one_sentence_and_runs_nothing(course, capsys, pair, fragment):
    write_notebook(course / "notebooks", "00_a.ipynb", "lr = 1.0\nout_dir = ''", LOG_RUN.format(name="00"))
    assert main(["--profile", "t", "--set", pair]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err
    assert not (course / "out" / "ran.log").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], ["00_a", "01_b", "02_c"]),
        (["--from", "01"], ["01_b", "02_c"]),
        (["--from", "02_c.ipynb"], ["02_c"]),
        (["--only", "02_c", "00"], ["00_a", "02_c"]),
    ],
)
def test_list_shows_the_selected_notebooks(course, capsys, args, expected):
    for name in ("00_a", "01_b", "02_c"):
        write_notebook(course / "notebooks", f"{name}.ipynb", None, "pass")
    (course / "notebooks" / "notes.ipynb").write_text("{}")  # not NN_name: never run

    assert main(["--profile", "t", "--list", *args]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == expected


def test_unknown_notebook_is_one_sentence_listing_the_notebooks(course, capsys):
    write_notebook(course / "notebooks", "00_a.ipynb", None, "pass")
    write_notebook(course / "notebooks", "01_b.ipynb", None, "pass")
    assert main(["--profile", "t", "--only", "07"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Unknown notebook '07': choose one of 00_a, 01_b") and "\n" not in err


def test_failing_notebook_stops_the_run_and_from_resumes(course, capsys):
    folder = course / "notebooks"
    write_notebook(folder, "00_first.ipynb", "out_dir = ''", LOG_RUN.format(name="00"))
    write_notebook(folder, "01_broken.ipynb", None, "raise ValueError('broken on purpose')")
    write_notebook(folder, "02_last.ipynb", "out_dir = ''", LOG_RUN.format(name="02"))
    log = course / "out" / "ran.log"
    executed = course / "results" / "t" / "notebooks"

    assert main(["--profile", "t"]) == 1
    err = capsys.readouterr().err
    assert "01_broken" in err and "ValueError" in err and "broken on purpose" in err
    assert str(executed / "01_broken.ipynb") in err and "Traceback" not in err
    assert (executed / "00_first.ipynb").exists() and (executed / "01_broken.ipynb").exists()
    assert not (executed / "02_last.ipynb").exists()
    assert log.read_text().split() == ["00"]
    run = json.loads((course / "results" / "t" / "pipeline.json").read_text())
    assert run["status"] == "failed"
    assert [r["status"] for r in run["notebooks"]] == ["ok", "failed", "not run"]

    assert main(["--profile", "t", "--from", "02"]) == 0
    assert log.read_text().split() == ["00", "02"]
    assert (executed / "00_first.ipynb").exists()  # outputs of earlier runs are kept
