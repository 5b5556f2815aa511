"""Benchmark: `04_grpo` over several seeds from the same start, each model scored as 06 scores it.

One GRPO run is 10 steps of 12 sampled rollouts: which pool items it draws, in which order, and which samples it
keeps all follow the seed, and a single run's gain on `test_normal` says little about the next. This benchmark
runs `python -m helpers --profile P --only 04 --set seed=N` for each seed (02 and 03 are not rerun: every run
starts from the last run's SFT models), scores each GRPO model on `test_normal`, `test_challenge` and 06's chats
with the same harness as 06, scores the start model the same way once, and prints one row per seed with the
learning curve's quarters and `04`'s seconds, then the mean and the range.

    python -m helpers.benchmarks.grpo_seeds --profile cpu-smollm2 --seeds 1 2 3   # about 40 minutes a seed here

Each seed's `grpo/` folder (log, probe curve, held-out rollouts, showcase) and its `04` notebook are kept under
`results/<profile>/grpo_seeds/seed<N>/` (`--keep-models`: its model too). What the last whole run left in `models/grpo`, `grpo/`, the executed
`04` notebook and `pipeline.json` is put back at the end, so 06's files still describe that run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

# what `--only 04` rewrites in results/<profile>/, restored after the seeds
RUN_OUTPUTS = ("models/grpo", "grpo", "notebooks/04_grpo.ipynb", "pipeline.json")


@contextmanager
def kept_outputs(results: Path, names=RUN_OUTPUTS):
    """Copies `names` (files or folders under `results`) aside and puts them back on exit, even on an error;
    a name that did not exist before is removed again."""
    with tempfile.TemporaryDirectory(dir=results) as aside:
        saved = {}
        for name in names:
            source = results / name
            saved[name] = source.exists()
            if source.is_dir():
                shutil.copytree(source, Path(aside) / name)
            elif source.exists():
                (Path(aside) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, Path(aside) / name)
        try:
            yield
        finally:
            for name in names:
                target = results / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                if not saved[name]:
                    continue
                if (Path(aside) / name).is_dir():
                    shutil.copytree(Path(aside) / name, target)
                else:
                    shutil.copy2(Path(aside) / name, target)


def run_04(command: list[str]) -> int:
    """One seed's `04` through the pipeline, in its own process (its memory is freed before the next seed)."""
    return subprocess.run(command).returncode


def curve_figures(grpo_dir: Path) -> dict:
    """The curve as `04` prints it: the sampled batch's mean reward over the first and the last quarter of the
    steps, the probe set's (greedy) over the same quarters, and how many groups trained on had a gradient."""
    from helpers.rl.probe import probe_curve_quarters, step_quarters

    history = pd.read_csv(grpo_dir / "log_history.csv")
    steps = history[history["rollouts/sampled_reward"].notna()]
    sampled_first, sampled_last = step_quarters(steps["rollouts/sampled_reward"])
    figures = {"sampled_first": sampled_first, "sampled_last": sampled_last,
               "groups": int(steps["rollouts/groups"].sum()),
               "groups_with_gradient": int(round(((1 - steps["frac_reward_zero_std"]) * steps["rollouts/groups"]).sum()))}
    probe_file = grpo_dir / "probe_curve.csv"
    quarters = probe_curve_quarters(pd.read_csv(probe_file)) if probe_file.exists() else None
    figures["probe_first"], figures["probe_last"] = quarters if quarters else (None, None)
    return figures


def scores(profile: str, model: str) -> dict:
    """TGC on both test splits, and the chats' success (overall and by intent) and asking rates, as 06 measures them."""
    from helpers.benchmarks.evaluate_model import ModelScorer
    from helpers.evaluation.chats import summarize_chats

    scorer = ModelScorer(profile, model)
    normal, challenge = scorer.split("test_normal"), scorer.split("test_challenge")
    chats = summarize_chats(scorer.chats())
    by_type = normal.per_task.groupby("scenario")["success"].sum().astype(int).to_dict()
    return {"test_normal": normal.summary["tgc"], "test_challenge": challenge.summary["tgc"],
            "chats": chats["success_rate"], "asked_missing": chats["asked_rate_missing"],
            "asked_complete": chats["asked_rate_complete"],
            # a GRPO run can move the chat model's guess of the intent: sends gained, requests lost, or the reverse
            "chats_send": chats.get("success_rate_send_money"), "chats_request": chats.get("success_rate_request_money"),
            "by_type": by_type}


def type_changes(by_type: dict, start: dict) -> str:
    """`test_normal` tasks gained or lost per task type against the start model, e.g. 'send_private +3'."""
    return ", ".join(f"{name} {by_type.get(name, 0) - count:+d}" for name, count in sorted(start.items())
                     if by_type.get(name, 0) != count)


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """The seeds' rows with their mean and range over the numeric columns (the start row left out)."""
    table = pd.DataFrame(rows)
    seeds = table[table["run"] != "start"].select_dtypes("number").drop(columns=["seed"], errors="ignore")
    extra = pd.DataFrame([{"run": "mean", **seeds.mean().round(2).to_dict()},
                          {"run": "min", **seeds.min().to_dict()}, {"run": "max", **seeds.max().to_dict()}])
    return pd.concat([table, extra], ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another override for every seed's 04, as `python -m helpers --set`")
    parser.add_argument("--keep-models", action="store_true",
                        help="also keep each seed's GRPO model in its folder (about 260 MB each for SmolLM2)")
    args = parser.parse_args(argv)

    from helpers.course.pipeline import PipelineError, parse_overrides
    from helpers.course.profiles import load_profile
    from helpers.metadata import run_metadata, write_json
    from helpers.paths import results_dir
    from helpers.training.models import models_dir
    from helpers.training.trainers import pick_start_model

    try:
        overrides = parse_overrides(args.set)
    except PipelineError as error:
        sys.exit(str(error))
    params = {**load_profile(args.profile), **overrides}
    try:  # the model 04 starts from, chosen as 04 chooses it
        _, start_dir = pick_start_model(models_dir(args.profile), params.get("grpo_start", "best"))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"{error} (`python -m helpers --profile {args.profile}` up to 03 trains the start models.)")
    start_model = start_dir.name
    results = results_dir(args.profile)
    start = scores(args.profile, start_model)
    rows = [{"run": "start", "model": start_model, **{k: v for k, v in start.items() if k != "by_type"}}]
    kept = results / "grpo_seeds"
    with kept_outputs(results):
        for seed in args.seeds:
            command = [sys.executable, "-m", "helpers", "--profile", args.profile, "--only", "04",
                       "--set", f"seed={seed}", *[part for item in args.set for part in ("--set", item)]]
            print("$", " ".join(command[1:]), flush=True)
            if run_04(command) != 0:
                done = ", ".join(str(r["seed"]) for r in rows[1:]) or "none"
                sys.exit(f"04 failed at seed {seed} (its executed copy: {results / 'notebooks' / '04_grpo.failed.ipynb'}; "
                         f"seeds finished: {done}, kept in {kept}); fix what it says and run the remaining seeds.")
            run = json.loads((results / "pipeline.json").read_text())
            seconds = next(n["seconds"] for n in run["notebooks"] if n["notebook"] == "04_grpo")
            target = kept / f"seed{seed}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(results / "grpo", target / "grpo")
            shutil.copy2(results / "notebooks" / "04_grpo.ipynb", target / "04_grpo.ipynb")
            if args.keep_models:
                shutil.copytree(results / "models" / "grpo", target / "model")
            scored = scores(args.profile, "grpo")
            row = {"run": f"seed {seed}", "seed": seed, **{k: v for k, v in scored.items() if k != "by_type"},
                   "seconds_04": round(seconds), **curve_figures(results / "grpo"),
                   "types": type_changes(scored["by_type"], start["by_type"])}
            rows.append(row)
            (target / "row.json").write_text(json.dumps(row, indent=2))
            print(pd.DataFrame([row]).to_string(index=False), flush=True)
    table = summary_table(rows)
    table.to_csv(kept / "seeds.csv", index=False)
    write_json(kept / "seeds_metadata.json", run_metadata(args.profile, params.get("seed", 0), seeds=args.seeds,
                                                          start=start_model, overrides=overrides))
    print(table.to_string(index=False))
    print(f"each seed's files: {kept}; the last whole run's GRPO model and files are back in place")


if __name__ == "__main__":
    main()
