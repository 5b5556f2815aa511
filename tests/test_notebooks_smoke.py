"""End to end: every notebook runs in order with papermill on the smoke profile."""
import json
import subprocess
import sys

from helpers.paths import DATA_DIR, REPO_ROOT, RESULTS_DIR


def test_pipeline_runs_every_notebook_on_the_smoke_profile():
    run = subprocess.run([sys.executable, "-m", "helpers", "--profile", "smoke"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
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
