"""Behaviour of the profile loader and the notebook pipeline, on small throw-away notebooks."""
import json
import os
import platform
import signal
import subprocess
import sys
import time

import nbformat
import psutil
import pytest

from helpers import paths
from helpers.course.pipeline import PipelineError, main, run_pipeline
from helpers.course.profiles import ProfileError, load_profile


def write_notebook(folder, name, parameters, *bodies):
    """Write notebook `name` with an optional cell tagged `parameters` followed by one code cell per body."""
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(nbformat.v4.new_code_cell(body) for body in bodies)
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
        [sys.executable, "-m", "helpers", "--profile", "no-such-profile"],
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

    # an exponent without a dot is a number too (YAML 1.1 would pass the string '2e-5' to the notebook)
    assert main(["--profile", "t", "--set", "lr=2e-5"]) == 0
    assert json.loads((course / "out" / "received.json").read_text())["lr"] == 2e-5


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
    assert str(executed / "01_broken.failed.ipynb") in err and "Traceback" not in err
    assert (executed / "00_first.ipynb").exists() and (executed / "01_broken.failed.ipynb").exists()
    assert not (executed / "02_last.ipynb").exists() and not list(executed.glob("*.running.ipynb"))
    assert log.read_text().split() == ["00"]
    run = json.loads((course / "results" / "t" / "pipeline.json").read_text())
    assert run["status"] == "failed"
    assert [r["status"] for r in run["notebooks"]] == ["ok", "failed", "not run"]

    assert main(["--profile", "t", "--from", "02"]) == 0
    assert log.read_text().split() == ["00", "02"]
    assert (executed / "00_first.ipynb").exists()  # outputs of earlier runs are kept


def test_a_failing_notebook_keeps_the_last_good_executed_copy(course):
    folder = course / "notebooks"
    write_notebook(folder, "00_a.ipynb", "fail = False", "print('run one' if not fail else 'run two')\n"
                                                           "if fail:\n    raise ValueError('broken')")
    executed = course / "results" / "t" / "notebooks"
    assert main(["--profile", "t", "--quiet"]) == 0
    good = (executed / "00_a.ipynb").read_text()
    assert main(["--profile", "t", "--quiet", "--set", "fail=true"]) == 1
    assert (executed / "00_a.ipynb").read_text() == good  # not overwritten by the failed run
    assert "run two" in (executed / "00_a.failed.ipynb").read_text()
    run = json.loads((course / "results" / "t" / "pipeline.json").read_text())
    assert run["notebooks"][0]["output"].endswith("00_a.failed.ipynb")
    # a later good run replaces the good copy and clears the failed one
    assert main(["--profile", "t", "--quiet"]) == 0
    assert sorted(p.name for p in executed.iterdir()) == ["00_a.ipynb"]


def _link_helpers(course):
    # as in the repository, the notebooks folder sees the helpers package (the kernel's progress setup lives there)
    (course / "notebooks" / "helpers").symlink_to(paths.REPO_ROOT / "helpers")


def test_each_cell_and_the_kernels_output_and_progress_bars_reach_the_terminal(course, capfd):
    _link_helpers(course)
    write_notebook(
        course / "notebooks", "00_progress.ipynb", "steps = 1",
        "# tqdm.auto would draw a widget in a kernel; under the pipeline it is text\n"
        "from tqdm.auto import tqdm\nprint('before')\nfor _ in tqdm(range(steps), desc='counting'):\n    pass",
        # a stand-in for transformers.trainer (the real one takes seconds to import): the Trainer's progress
        # callback is chosen at its import, so the kernel swaps it before each later cell
        "import sys, types\nsys.modules['transformers.trainer'] = types.SimpleNamespace(\n"
        "    DEFAULT_PROGRESS_CALLBACK='NotebookProgressCallback', ProgressCallback='ProgressCallback')",
        "print(sys.modules['transformers.trainer'].DEFAULT_PROGRESS_CALLBACK)")
    assert main(["--profile", "t", "--set", "steps=3"]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines[1:9] == ["[1/1] 00_progress ...", "  cell 1/5: (the notebook's default parameters)",
                          "  cell 2/5: (the profile's parameters)", "  cell 3/5: from tqdm.auto import tqdm",
                          "    before", "  cell 4/5: import sys, types", "  cell 5/5: print(sys.modules["
                          "'transformers.trainer'].DEFAULT_PROGRESS_CALLBACK)", "    ProgressCallback"]
    assert lines[9].startswith("[1/1] 00_progress ok in ")
    assert "    counting: 100%" in err and "3/3" in err  # the bar, forwarded as text and indented under its notebook

    assert main(["--profile", "t", "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert "  cell " not in out and "before" not in out and "counting" not in err
    assert out.splitlines()[1].startswith("[1/1] 00_progress ... ok in ")


def test_text_progress_swaps_the_trainers_notebook_progress_table(monkeypatch):
    import tqdm.auto
    import tqdm.autonotebook
    import transformers.trainer
    from transformers.utils.notebook import NotebookProgressCallback

    from helpers import progress

    monkeypatch.setattr(transformers.trainer, "DEFAULT_PROGRESS_CALLBACK", NotebookProgressCallback)
    for module in (tqdm.auto, tqdm.autonotebook):
        for name in ("tqdm", "trange"):
            monkeypatch.setattr(module, name, getattr(module, name))
    progress.use_text_progress()
    assert transformers.trainer.DEFAULT_PROGRESS_CALLBACK is transformers.trainer.ProgressCallback
    assert tqdm.auto.tqdm is tqdm.std.tqdm


# the pipeline's command line in another process, pointed at the test's folders as the `course` fixture does
IN_COURSE = ("import sys, pathlib\nfrom helpers import paths\nroot = pathlib.Path(sys.argv[1])\n"
             "paths.NOTEBOOKS_DIR, paths.PROFILES_DIR, paths.RESULTS_DIR = (root / n for n in "
             "('notebooks', 'profiles', 'results'))\nfrom helpers.course.pipeline import main\n"
             "sys.exit(main(sys.argv[2:]))")
SLOW = "import time, pathlib\npathlib.Path(out_dir, 'started').write_text('')\ntime.sleep(pause)"


def _start_and_wait(course, *args):
    """Start the pipeline in its own process group and wait until the slow notebook's cell is running."""
    process = subprocess.Popen([sys.executable, "-c", IN_COURSE, str(course), "--profile", "t", "--quiet", *args],
                               cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    started = course / "out" / "started"
    deadline = time.monotonic() + 60
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), process.communicate()
    return process


@pytest.fixture
def slow_course(course):
    write_notebook(course / "notebooks", "00_slow.ipynb", "pause = 0\nout_dir = ''", SLOW)
    assert main(["--profile", "t", "--quiet"]) == 0  # a good run first: its executed copy must survive
    (course / "out" / "started").unlink()
    return course


def _history(course):
    return [json.loads(line) for line in (course / "results" / "t" / "pipeline_history.jsonl").read_text().splitlines()]


def test_sigterm_is_recorded_as_terminated_and_keeps_the_good_copy(slow_course):
    executed = slow_course / "results" / "t" / "notebooks"
    good = (executed / "00_slow.ipynb").read_text()
    process = _start_and_wait(slow_course, "--set", "pause=60")
    kernel = psutil.Process(process.pid).children(recursive=True)
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        _, alive = psutil.wait_procs(kernel, timeout=10)
    finally:
        _end_group(process)
    assert kernel and not alive  # the pipeline shut its kernel down on the way out
    assert process.returncode == 128 + signal.SIGTERM and "Terminated;" in err and "Traceback" not in err
    run = json.loads((slow_course / "results" / "t" / "pipeline.json").read_text())
    assert run["status"] == "terminated" and run["notebooks"][0]["status"] == "terminated"
    assert (executed / "00_slow.ipynb").read_text() == good and (executed / "00_slow.interrupted.ipynb").exists()
    assert [r["status"] for r in _history(slow_course)] == ["ok", "terminated"]


def test_a_killed_run_is_recorded_as_killed_by_the_next_run(slow_course, capsys):
    executed = slow_course / "results" / "t" / "notebooks"
    good = (executed / "00_slow.ipynb").read_text()
    process = _start_and_wait(slow_course, "--set", "pause=60")
    _end_group(process)  # SIGKILL: nothing can be recorded at the time
    record = slow_course / "results" / "t" / "pipeline.json"
    assert json.loads(record.read_text())["status"] == "running"

    assert main(["--profile", "t", "--quiet"]) == 0
    assert "was killed while running 00_slow" in capsys.readouterr().out
    killed = _history(slow_course)[1]
    assert killed["status"] == "killed" and killed["notebooks"][0]["status"] == "killed" and killed["note"]
    assert killed["notebooks"][0]["output"].endswith("00_slow.interrupted.ipynb")
    now = json.loads(record.read_text())
    assert now["status"] == "ok" and now["previous_run"]["status"] == "killed"
    assert now["previous_run"]["notebook"] == "00_slow" and now["previous_run"]["pid"] == process.pid
    assert (executed / "00_slow.ipynb").read_text() != good  # replaced by the new good run, the partial one kept
    assert sorted(p.name for p in executed.iterdir()) == ["00_slow.ipynb"]


def test_a_second_run_of_a_profile_that_is_running_is_refused(course):
    write_notebook(course / "notebooks", "00_a.ipynb", None, "pass")
    record = course / "results" / "t" / "pipeline.json"
    record.parent.mkdir(parents=True)
    me = psutil.Process()
    record.write_text(json.dumps({"profile": "t", "status": "running", "host": platform.node(), "pid": me.pid,
                                  "process_started": me.create_time(), "started_at": "earlier"}))
    with pytest.raises(PipelineError, match=f"is being run by another pipeline \\(process {me.pid}"):
        run_pipeline("t")
    assert json.loads(record.read_text())["status"] == "running"  # the other run's record is left alone


def _end_group(process):
    """Kill the pipeline this test started, and the kernel it started, if they are still there."""
    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    for child in started:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def pages(course, monkeypatch):
    """Pages a published run writes into: a README and docs/ inside the temporary layout."""
    monkeypatch.setattr(paths, "REPO_ROOT", course)
    monkeypatch.setattr(paths, "DOCS_DIR", course / "docs")
    (course / "docs").mkdir()
    (course / "README.md").write_text("<!-- results-t:start -->\nold table\n<!-- results-t:end -->\n")
    page = course / "docs" / "results-t.md"
    page.write_text("<!-- results-t:start -->\n<!-- results-t:end -->\n<!-- timings-t:start -->\n<!-- timings-t:end -->\n")
    return page


# Records the `publish` value the notebook received (06 writes its tables into the pages when it is true).
PUBLISHING = "import json, pathlib\npathlib.Path(out_dir, 'publish.json').write_text(json.dumps(publish))"


def test_a_run_publishes_only_when_asked(course, pages, capsys):
    write_notebook(course / "notebooks", "00_results.ipynb", "publish = False\nout_dir = ''", PUBLISHING)
    assert main(["--profile", "t"]) == 0
    assert json.loads((course / "out" / "publish.json").read_text()) is False
    before = pages.read_text()
    assert "minutes" not in before

    assert main(["--profile", "t", "--publish"]) == 0
    assert json.loads((course / "out" / "publish.json").read_text()) is True
    # the stage times go between their markers, wherever they are; the rest of the page is left as it was
    after = pages.read_text()
    assert "| `00_results` |" in after and "--publish` at commit" in after
    assert after.startswith("<!-- results-t:start -->\n<!-- results-t:end -->\n")
    run = json.loads((course / "results" / "t" / "pipeline.json").read_text())
    assert run["published"] is True and run["parameters"]["publish"] is True


@pytest.mark.parametrize("args, fragment", [
    (["--only", "00"], "drop --from, --only and --set"),
    (["--from", "00"], "drop --from, --only and --set"),
    (["--set", "out_dir=elsewhere"], "drop --from, --only and --set"),
])
def test_publishing_a_partial_or_changed_run_is_refused_before_it_starts(course, pages, capsys, args, fragment):
    write_notebook(course / "notebooks", "00_results.ipynb", "publish = False\nout_dir = ''", PUBLISHING)
    assert main(["--profile", "t", "--publish", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err
    assert not (course / "out" / "publish.json").exists()


def test_publish_is_not_a_value_to_set_and_needs_a_results_page(course, pages, capsys):
    write_notebook(course / "notebooks", "00_results.ipynb", "publish = False\nout_dir = ''", PUBLISHING)
    assert main(["--profile", "t", "--set", "publish=true"]) == 2
    assert "set by --publish" in capsys.readouterr().err
    assert main(["--profile", "other", "--publish"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Profile other has no results page") and "<!-- results-other:start -->" in err
    assert not (course / "out" / "publish.json").exists()
