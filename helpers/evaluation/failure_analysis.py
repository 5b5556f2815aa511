"""What the models get wrong, read from the episodes the evaluation journaled: the success rate of every model on
every task type, and, for the best trained model, one failing episode per task type with its first thought beside
the expert's first thought on the same task (where the plan goes wrong, it usually shows there)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from helpers.course.report import MODEL_ORDER
from helpers.harness.evaluate import read_journal

TRAINED_MODELS = ("sft_full", "lora", "grpo")
REFERENCE_MODEL = "expert"
REPORT = "failure_analysis.md"
CELL_CHARS = 180  # a table cell longer than this is cut: the journal keeps the whole trajectory


def load_episodes(directory: str | Path, splits: dict[str, set[str]]) -> pd.DataFrame:
    """One row per journaled episode of the given splits (split -> the task ids it holds now), every model.

    A journal is `<model>_<split>_episodes.jsonl`; records of tasks no longer in the split are left out.
    """
    rows = []
    for split, task_ids in splits.items():
        suffix = f"_{split}_episodes.jsonl"
        for journal in sorted(Path(directory).glob(f"*{suffix}")):
            model = journal.name[:-len(suffix)]
            for record in read_journal(journal).values():
                if record["task_id"] not in task_ids:
                    continue
                first = record["trajectory"][0] if record["trajectory"] else None
                rows.append({
                    "model": model, "split": split, "task_id": record["task_id"], "scenario": record["scenario"],
                    "success": bool(record["success"]), "steps": record["steps"], "error": record.get("error") or "",
                    "first_thought": _first_thought(first),
                    "failed_checks": ", ".join(c["name"] for c in record.get("checks", []) if not c["passed"]),
                })
    episodes = pd.DataFrame(rows, columns=["model", "split", "task_id", "scenario", "success", "steps", "error",
                                           "first_thought", "failed_checks"])
    # tables list the splits in the order given (test_normal first), not alphabetically
    episodes["split"] = pd.Categorical(episodes["split"], categories=list(splits), ordered=True)
    return episodes


def _first_thought(step: dict | None) -> str:
    if step is None:
        return "(no step)"
    if step.get("error_kind") == "parse_error":  # the reply held no usable JSON: show what was written
        return f"(no usable reply) {step['action']}".strip()
    return step["thought"]


def _ordered(models) -> list[str]:
    known = [m for m in MODEL_ORDER if m in set(models)]
    return known + sorted(set(models) - set(known))


def success_by_type(episodes: pd.DataFrame) -> pd.DataFrame:
    """Success rate (% of tasks) per split and task type (rows) and model (columns), with the task count."""
    table = episodes.pivot_table(index=["split", "scenario"], columns="model", values="success", aggfunc="mean",
                                 observed=True)
    table = (100 * table[_ordered(table.columns)]).round(1)
    counts = episodes.groupby(["split", "scenario"], observed=True)["task_id"].nunique()
    table.insert(0, "tasks", counts.reindex(table.index))
    return table


def best_trained_model(episodes: pd.DataFrame, split: str) -> str | None:
    """The trained model that completes the most tasks of `split` (the first in MODEL_ORDER on a tie)."""
    rates = episodes[(episodes["split"] == split) & episodes["model"].isin(TRAINED_MODELS)].groupby("model")["success"]
    rates = rates.mean()
    if rates.empty:
        return None
    best = rates.max()
    return next(m for m in _ordered(rates.index) if rates[m] == best)


def failure_examples(episodes: pd.DataFrame, model: str, instructions: dict[str, str]) -> pd.DataFrame:
    """Per task type where `model` fails a task: its first failing task (by id), the instruction, the model's
    first thought beside the expert's on the same task, and what went wrong (failed checks, how it ended)."""
    ran = episodes[episodes["model"] == model]
    totals = ran.groupby(["split", "scenario"], observed=True).size()
    mine = ran[~ran["success"]].sort_values(["split", "scenario", "task_id"])
    expert = episodes[episodes["model"] == REFERENCE_MODEL].set_index(["split", "task_id"])["first_thought"]
    rows = []
    for (split, scenario), group in mine.groupby(["split", "scenario"], observed=True):
        failed = group.iloc[0]
        wrong = ([f"checks not met: {failed.failed_checks}"] if failed.failed_checks else []) + \
                ([f"ended: {failed.error}"] if failed.error else [])
        rows.append({"split": split, "task type": scenario, "failed": f"{len(group)} of {totals[(split, scenario)]}",
                     "task": failed.task_id, "instruction": instructions.get(failed.task_id, ""),
                     f"{model}'s first thought": failed.first_thought,
                     "expert's first thought": expert.get((split, failed.task_id), "(the expert was not evaluated)"),
                     "what went wrong": "; ".join(wrong)})
    return pd.DataFrame(rows)


def _cell(value) -> str:
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def _markdown(table: pd.DataFrame, index: bool = True) -> str:
    frame = table.reset_index() if index else table
    lines = ["| " + " | ".join(map(_cell, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join("" if pd.isna(v) else _cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def failure_report(episodes: pd.DataFrame, instructions: dict[str, str], first_split: str) -> str:
    """The failure analysis as markdown: success per task type for every model, then the best trained model's
    failures (chosen on `first_split`), one task per task type, each first thought beside the expert's."""
    if episodes.empty:
        return "No evaluated episodes were found: run 05_base_inference and 06_finetuned_inference first."
    parts = ["Success per task type (% of tasks; `tasks`: tasks of the type in the split):", "",
             _markdown(success_by_type(episodes))]
    model = best_trained_model(episodes, first_split)
    if model is None:
        parts += ["", "No trained model was evaluated."]
        return "\n".join(parts)
    examples = failure_examples(episodes, model, instructions)
    parts += ["", f"Where the best trained model on `{first_split}`, `{model}`, fails: for each task type, its first "
                  "failing task, its first thought beside the expert's on the same task, and what went wrong.", ""]
    parts.append(_markdown(examples, index=False) if not examples.empty else f"`{model}` completes every task.")
    return "\n".join(parts)
