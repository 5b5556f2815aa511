"""The seeds benchmark's bookkeeping: what `--only 04` overwrites comes back, and the figures it prints."""
import pandas as pd
import pytest

from helpers.benchmarks.grpo_seeds import curve_figures, kept_outputs, summary_table, type_changes


def _run_outputs(results):
    (results / "models" / "grpo").mkdir(parents=True)
    (results / "models" / "grpo" / "model.safetensors").write_text("published weights")
    (results / "grpo").mkdir()
    (results / "grpo" / "log_history.csv").write_text("published log")
    (results / "notebooks").mkdir()
    (results / "notebooks" / "04_grpo.ipynb").write_text("published notebook")


def _overwrite(results):
    (results / "models" / "grpo" / "model.safetensors").write_text("seed 5 weights")
    (results / "models" / "grpo" / "extra.bin").write_text("seed 5 only")
    (results / "grpo" / "log_history.csv").write_text("seed 5 log")
    (results / "notebooks" / "04_grpo.ipynb").write_text("seed 5 notebook")
    (results / "pipeline.json").write_text("{}")  # did not exist before


def _assert_published(results):
    assert (results / "models" / "grpo" / "model.safetensors").read_text() == "published weights"
    assert not (results / "models" / "grpo" / "extra.bin").exists()
    assert (results / "grpo" / "log_history.csv").read_text() == "published log"
    assert (results / "notebooks" / "04_grpo.ipynb").read_text() == "published notebook"
    assert not (results / "pipeline.json").exists()


def test_the_last_runs_outputs_come_back_after_the_seeds(tmp_path):
    _run_outputs(tmp_path)
    with kept_outputs(tmp_path):
        _overwrite(tmp_path)
    _assert_published(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grpo", "models", "notebooks"]  # nothing left aside


def test_the_last_runs_outputs_come_back_when_a_seed_fails(tmp_path):
    _run_outputs(tmp_path)
    with pytest.raises(RuntimeError):
        with kept_outputs(tmp_path):
            _overwrite(tmp_path)
            raise RuntimeError("04 failed")
    _assert_published(tmp_path)


def test_curve_figures_are_the_notebooks_quarters(tmp_path):
    # 8 steps: the quarters are steps 1-2 and 7-8; the probe was played at steps 0, 4 and 8
    rewards = [1.0, 3.0, 9.0, 9.0, 9.0, 9.0, 5.0, 7.0]
    history = pd.DataFrame({"rollouts/sampled_reward": rewards, "rollouts/groups": [3] * 8,
                            "frac_reward_zero_std": [0.0, 1 / 3, 1.0, 0.0, 0.0, 0.0, 2 / 3, 0.0]})
    # TRL's last row is the run's summary, without the rollout figures
    history = pd.concat([history, pd.DataFrame([{"train_runtime": 10.0}])], ignore_index=True)
    history.to_csv(tmp_path / "log_history.csv", index=False)
    pd.DataFrame({"step": [0, 4, 8], "reward": [2.0, 4.0, 5.0]}).to_csv(tmp_path / "probe_curve.csv", index=False)
    figures = curve_figures(tmp_path)
    assert figures["sampled_first"] == 2.0 and figures["sampled_last"] == 6.0
    assert figures["probe_first"] == 2.0 and figures["probe_last"] == 5.0
    assert figures["groups"] == 24 and figures["groups_with_gradient"] == 24 - 1 - 3 - 2


def test_type_changes_and_the_summary_rows():
    start = {"send_private": 0, "approve_request": 3, "add_balance": 3}
    assert type_changes({"send_private": 3, "approve_request": 2, "add_balance": 3}, start) == \
        "approve_request -1, send_private +3"
    rows = [{"run": "start", "test_normal": 76.9}, {"run": "seed 1", "seed": 1, "test_normal": 80.0},
            {"run": "seed 2", "seed": 2, "test_normal": 70.0}]
    table = summary_table(rows).set_index("run")
    assert table.loc["mean", "test_normal"] == 75.0  # the start row is not a seed
    assert table.loc["min", "test_normal"] == 70.0 and table.loc["max", "test_normal"] == 80.0


def test_bad_input_gets_one_sentence(tmp_path, monkeypatch):
    from helpers.benchmarks import grpo_seeds
    import helpers.training.models as models

    with pytest.raises(SystemExit, match="NAME=VALUE"):
        grpo_seeds.main(["--profile", "smoke", "--set", "grpo_beta"])
    monkeypatch.setattr(models, "models_dir", lambda profile: tmp_path)  # no SFT model trained yet
    with pytest.raises(SystemExit, match="run 02_sft_full .* up to 03 trains the start models"):
        grpo_seeds.main(["--profile", "smoke", "--seeds", "1"])
