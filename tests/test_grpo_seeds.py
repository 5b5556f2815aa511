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


def test_the_seeds_run_04_each_score_it_and_leave_the_last_run_in_place(tmp_path, monkeypatch):
    """main() with 04 and the harness replaced by fakes: the bookkeeping around them, end to end."""
    import json

    import helpers.paths as paths
    import helpers.training.models as models
    import helpers.training.trainers as trainers
    from helpers.benchmarks import grpo_seeds

    _run_outputs(tmp_path)
    (tmp_path / "models" / "sft_full").mkdir()
    monkeypatch.setattr(paths, "results_dir", lambda profile: tmp_path)
    monkeypatch.setattr(models, "models_dir", lambda profile: tmp_path / "models")
    monkeypatch.setattr(trainers, "pick_start_model", lambda root, choice: ("sft_full", root / "sft_full"))
    commands = []

    def fake_04(command):
        commands.append(command)
        seed = int(command[command.index("--set") + 1].split("=")[1])
        (tmp_path / "models" / "grpo" / "model.safetensors").write_text(f"seed {seed} weights")
        pd.DataFrame({"rollouts/sampled_reward": [seed, 1.0, 2.0, 3.0], "rollouts/groups": [3] * 4,
                      "frac_reward_zero_std": [0.0] * 4}).to_csv(tmp_path / "grpo" / "log_history.csv", index=False)
        (tmp_path / "notebooks" / "04_grpo.ipynb").write_text(f"seed {seed} notebook")
        (tmp_path / "pipeline.json").write_text(json.dumps({"notebooks": [{"notebook": "04_grpo", "seconds": 60.0 * seed}]}))
        return 0

    def fake_scores(profile, model):
        if model == "sft_full":
            return {"test_normal": 50.0, "test_challenge": 10.0, "chats": 40.0, "asked_missing": 0.0,
                    "asked_complete": 0.0, "by_type": {"a": 3, "b": 0}}
        seed = int((tmp_path / "models" / "grpo" / "model.safetensors").read_text().split()[1])
        return {"test_normal": 50.0 + seed, "test_challenge": 10.0, "chats": 40.0, "asked_missing": 100.0,
                "asked_complete": 0.0, "by_type": {"a": 3, "b": seed}}

    monkeypatch.setattr(grpo_seeds, "run_04", fake_04)
    monkeypatch.setattr(grpo_seeds, "scores", fake_scores)
    grpo_seeds.main(["--profile", "smoke", "--seeds", "1", "2", "--set", "grpo_beta=0"])

    assert [c[c.index("--only") + 1:] for c in commands] == [
        ["04", "--set", "seed=1", "--set", "grpo_beta=0"], ["04", "--set", "seed=2", "--set", "grpo_beta=0"]]
    table = pd.read_csv(tmp_path / "grpo_seeds" / "seeds.csv").set_index("run")
    assert list(table.index) == ["start", "seed 1", "seed 2", "mean", "min", "max"]
    assert table.loc["seed 2", "test_normal"] == 52.0 and table.loc["mean", "test_normal"] == 51.5
    assert table.loc["seed 2", "types"] == "b +2" and table.loc["seed 1", "seconds_04"] == 60
    assert table.loc["seed 2", "sampled_first"] == 2.0 and table.loc["seed 2", "sampled_last"] == 3.0
    assert (tmp_path / "grpo_seeds" / "seed1" / "04_grpo.ipynb").read_text() == "seed 1 notebook"
    metadata = json.loads((tmp_path / "grpo_seeds" / "seeds_metadata.json").read_text())
    assert metadata["seeds"] == [1, 2] and metadata["overrides"] == {"grpo_beta": 0} and metadata["git_commit"]
    _assert_published(tmp_path)  # 06's files still describe the last whole run


def test_a_failed_seed_is_one_sentence_and_the_last_run_comes_back(tmp_path, monkeypatch):
    import helpers.paths as paths
    import helpers.training.models as models
    import helpers.training.trainers as trainers
    from helpers.benchmarks import grpo_seeds

    _run_outputs(tmp_path)
    monkeypatch.setattr(paths, "results_dir", lambda profile: tmp_path)
    monkeypatch.setattr(models, "models_dir", lambda profile: tmp_path / "models")
    monkeypatch.setattr(trainers, "pick_start_model", lambda root, choice: ("sft_full", root / "sft_full"))
    monkeypatch.setattr(grpo_seeds, "scores", lambda profile, model: {"by_type": {}})

    def failing_04(command):
        _overwrite(tmp_path)  # a notebook that died halfway
        return 1

    monkeypatch.setattr(grpo_seeds, "run_04", failing_04)
    with pytest.raises(SystemExit, match="04 failed at seed 4 .* seeds finished: none"):
        grpo_seeds.main(["--profile", "smoke", "--seeds", "4", "5"])
    _assert_published(tmp_path)
