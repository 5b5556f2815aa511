"""The reference copy is made only from a whole run that finished, as the profile wrote it."""
import json

import pytest

from helpers import paths
from helpers.course.reference import ReferenceError, main, make_reference


def _run(status="ok", notebooks=("00_a", "01_b"), failed=(), overrides=None):
    return {"profile": "p", "status": status, "finished_at": "2026-01-01T00:00:00", "seconds": 60.0,
            "git_commit": "abc", "overrides": overrides or {},
            "notebooks": [{"notebook": n, "status": "failed" if n in failed else "ok", "seconds": 30.0}
                          for n in notebooks]}


@pytest.fixture
def results(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    for name in ("00_a", "01_b"):
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "results" / "p").mkdir(parents=True)
    return tmp_path / "results" / "p"


@pytest.mark.parametrize("run, fragment", [
    (None, "holds no run record"),
    (_run(status="failed", failed=("01_b",)), "ended 'failed' in 01_b"),
    (_run(status="interrupted"), "ended 'interrupted'"),
    (_run(notebooks=("01_b",)), "a whole run of the profile as written"),
    (_run(overrides={"sft_epochs": 1}), "a whole run of the profile as written"),
])
def test_only_a_whole_finished_run_becomes_a_reference(results, capsys, run, fragment):
    if run is not None:
        (results / "pipeline.json").write_text(json.dumps(run))
    with pytest.raises(ReferenceError) as refused:
        make_reference("p")
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    assert main(["--profile", "p"]) == 2
    assert capsys.readouterr().err.strip() == str(refused.value)
    assert not (results.parent / "reference").exists()
