"""End to end: every notebook runs in order with papermill on the smoke profile; the run changes no file of the
repository, and its reference copy is made from it."""
import hashlib
import json
import subprocess
import sys

import nbformat
import pytest

from helpers.course.reference import MAX_BYTES, ReferenceError, make_reference
from helpers.paths import DATA_DIR, REPO_ROOT, RESULTS_DIR


def _repository_files() -> dict[str, str]:
    """Every file git would show (tracked, or untracked and not ignored), with a digest of its content."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return {name: hashlib.sha256((REPO_ROOT / name).read_bytes()).hexdigest()
            for name in filter(None, listed) if (REPO_ROOT / name).is_file()}


@pytest.fixture(scope="module")
def smoke_run():
    before = _repository_files()
    run = subprocess.run([sys.executable, "-m", "helpers", "--profile", "smoke"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return before, _repository_files()


def test_pipeline_runs_every_notebook_on_the_smoke_profile(smoke_run):
    record = json.loads((RESULTS_DIR / "smoke" / "pipeline.json").read_text())
    notebooks = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [n["notebook"] for n in record["notebooks"]] == notebooks
    assert all(n["status"] == "ok" for n in record["notebooks"])
    tour = RESULTS_DIR / "smoke" / "world_tour"
    summary = (tour / "expert_test_challenge_summary.csv").read_text().splitlines()
    assert summary[0].startswith("model,split,tasks,scenarios,tgc,sgc")
    assert json.loads((tour / "expert_train_metadata.json").read_text())["summary"]["tgc"] == 100.0
    # the profile lists the README's example task in extra_task_files: every model is scored on it apart
    custom = RESULTS_DIR / "smoke" / "evaluation" / "custom"
    report = (custom / "report.md").read_text()
    assert "## example_task" in report and "| expert | 1 | 100.0 | 100.0 | 100.0 |" in report
    assert {"base", "sft_full"} <= {p.name.split("_example_task")[0] for p in custom.glob("*_summary.csv")}
    assert not list((RESULTS_DIR / "smoke" / "evaluation").glob("*example_task*"))  # apart from the splits
    datasets = DATA_DIR / "smoke" / "datasets"
    for name in ("queries", "stepwise_train", "stepwise_dev", "conversations_train", "preferences_train", "openai_train"):
        meta = json.loads((datasets / f"{name}.metadata.json").read_text())
        lines = (datasets / f"{name}.jsonl").read_text().splitlines()
        assert meta["records"] == len(lines) > 0 and meta["seed"] == 0 and meta["versions"]["trl"]
    probe = (RESULTS_DIR / "smoke" / "grpo" / "probe_curve.csv").read_text().splitlines()
    assert probe[0].startswith("step,reward,success") and [row.split(",")[0] for row in probe[1:]] == ["0", "1", "2"]
    analysis = (RESULTS_DIR / "smoke" / "evaluation" / "failure_analysis.md").read_text()
    assert "| test_normal | send_by_name |" in analysis and "expert's first thought" in analysis


def test_a_run_without_publish_changes_no_file_of_the_repository(smoke_run):
    before, after = smoke_run
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"the smoke run, published by nobody, changed {changed}"


def test_the_reference_copy_of_the_run_opens_with_outputs_and_stays_small(smoke_run, tmp_path):
    target = make_reference("smoke", target=tmp_path / "reference" / "smoke")
    record = json.loads((RESULTS_DIR / "smoke" / "pipeline.json").read_text())
    readme = (target / "README.md").read_text()
    assert f"at commit `{record['git_commit'].removesuffix('-dirty')}`" in readme
    assert "`python -m helpers --profile smoke`" in readme
    files = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert {f"notebooks/{n['notebook']}.ipynb" for n in record["notebooks"]} <= files
    assert {"pipeline.json", "evaluation/failure_analysis.md", "evaluation/sft_full_test_normal_tasks.csv",
            "evaluation/goal_completion.png", "sft_full/loss_curve.png"} <= files
    assert not [f for f in files if f.startswith("models/") or f.endswith((".key", ".safetensors"))]
    executed = nbformat.read(target / "notebooks" / "06_finetuned_inference.ipynb", as_version=4)
    assert any(o.get("data", {}).get("image/png") for c in executed.cells for o in c.get("outputs", []))
    assert sum((target / f).stat().st_size for f in files) <= MAX_BYTES

    with pytest.raises(ReferenceError) as refused:  # too big: one sentence, and the last copy is left as it was
        make_reference("smoke", target=target, max_bytes=100_000)
    assert "over the 0.1 MB a reader can browse" in str(refused.value) and "\n" not in str(refused.value)
    assert (target / "README.md").read_text() == readme
