"""Comparing evaluated models: tables and plots from the result files, and the marked sections of the pages
(README.md and docs/*.md) that a published run writes."""
from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from helpers import paths

MODEL_ORDER = ["base", "sft_full", "lora", "grpo", "gpt-4o", "expert"]


def _order(models) -> list[str]:
    known = [m for m in MODEL_ORDER if m in set(models)]
    return known + sorted(set(models) - set(known))


def load_summaries(directory: Path) -> pd.DataFrame:
    """Every `*_summary.csv` written by save_evaluation in a folder, one row per model and split."""
    frames = [pd.read_csv(p) for p in sorted(Path(directory).glob("*_summary.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_per_task(directory: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(Path(directory).glob("*_tasks.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def comparison_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Model rows, (split, metric) columns: TGC, SGC and mean pass % for each split."""
    table = summaries.pivot_table(index="model", columns="split", values=["tgc", "sgc", "mean_pass_pct"])
    table = table.swaplevel(axis=1).sort_index(axis=1)
    return table.reindex(_order(table.index))


def plot_goal_completion(summaries: pd.DataFrame, path: Path | None = None, title: str = ""):
    """Grouped bars: TGC and SGC of each model on each split."""
    splits = sorted(summaries["split"].unique(), key=lambda s: (s != "test_normal", s))
    models = _order(summaries["model"].unique())
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        part = summaries[summaries["split"] == split].set_index("model").reindex(models)
        part[["tgc", "sgc"]].rename(columns={"tgc": "TGC", "sgc": "SGC"}).plot.bar(ax=ax, rot=20, ylim=(0, 105))
        ax.set_title(split)
        ax.set_ylabel("%")
        ax.set_xlabel("")
        for container in ax.containers:
            ax.bar_label(container, fmt="%.0f", fontsize=8)
    fig.suptitle(title or "Task and scenario goal completion")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_scenario_pass(per_task: pd.DataFrame, path: Path | None = None, title: str = ""):
    """Heatmap of mean pass % per scenario type (rows) and model (columns), every split included."""
    pivot = per_task.pivot_table(index="scenario", columns="model", values="pass_pct", aggfunc="mean")
    pivot = pivot[_order(pivot.columns)]
    fig, ax = plt.subplots(figsize=(1.4 * len(pivot.columns) + 3, 0.38 * len(pivot) + 1.5))
    image = ax.imshow(pivot.values, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(pivot.columns)), pivot.columns, rotation=20)
    ax.set_yticks(range(len(pivot.index)), pivot.index)
    for (i, j), value in pd.DataFrame(pivot.values).stack().items():
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="mean pass %")
    ax.set_title(title or "Pass % per scenario type")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def load_chat_summaries(directory: Path) -> pd.DataFrame:
    """Every `*_chat_summary.csv` written by save_chat_evaluation in a folder, one row per model."""
    frames = [pd.read_csv(p) for p in sorted(Path(directory).glob("*_chat_summary.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "success_rate"])


def _by_model(chats: pd.DataFrame, column: str) -> dict:
    return {model: value for model, value in zip(chats["model"], chats[column]) if pd.notna(value)}


def markdown_table(summaries: pd.DataFrame, chats: pd.DataFrame | None = None) -> str:
    """The results table: one row per model, TGC / SGC / mean pass % per test split, and with `chats` (the chat
    summaries) the share of simulated-user chats each model completed and, where the summaries count questions, the
    share of the chats lacking a detail in which it asked for one; a model without chats gets empty cells."""
    header = ("| model | test_normal TGC | test_normal SGC | test_normal pass % | test_challenge TGC | "
              "test_challenge SGC | test_challenge pass % |")
    rule = "|---|---|---|---|---|---|---|"
    chat_rates, asked_rates = {}, {}
    asked = chats is not None and "asked_rate_missing" in chats
    if chats is not None:
        header += " chat success % |" + (" chats lacking a detail: asked % |" if asked else "")
        rule += "---|" + ("---|" if asked else "")
        chat_rates = _by_model(chats, "success_rate")
    if asked:
        asked_rates = _by_model(chats, "asked_rate_missing")
    rows = [header, rule]
    for model in _order(summaries["model"].unique()):
        cells = [model]
        for split in ("test_normal", "test_challenge"):
            row = summaries[(summaries["model"] == model) & (summaries["split"] == split)]
            if row.empty:
                cells += ["", "", ""]
            else:
                r = row.iloc[0]
                cells += [f"{r.tgc:.1f}", f"{r.sgc:.1f}", f"{r.mean_pass_pct:.1f}"]
        if chats is not None:
            cells.append(f"{chat_rates[model]:.1f}" if model in chat_rates else "")
        if asked:
            cells.append(f"{asked_rates[model]:.1f}" if model in asked_rates else "")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def timings_table(run: dict) -> str:
    """The time of every notebook of a pipeline run (its `pipeline.json`), as a markdown table."""
    rows = ["| notebook | minutes |", "|---|---|"]
    rows += [f"| `{n['notebook']}` | {n['seconds'] / 60:.1f} |" for n in run["notebooks"]]
    rows.append(f"| **whole profile** | **{run['seconds'] / 60:.1f}** |")
    machine = f"{run.get('python', '?')}, {os.cpu_count()} CPU cores"
    return "\n".join(rows) + (f"\n\nMeasured by `python -m helpers --profile {run['profile']} --publish` at commit "
                               f"`{str(run.get('git_commit', 'unknown'))[:12]}`, finished {run['finished_at']} "
                               f"(Python {machine}).")


def _markers(name: str) -> re.Pattern:
    # each marker is a line of its own (a page may quote one inside a sentence); they may hold nothing yet
    return re.compile(rf"^(<!-- {re.escape(name)}:start -->\n)(?:.*?\n)?(<!-- {re.escape(name)}:end -->)$", re.S | re.M)


def published_pages() -> list[Path]:
    """The pages a published run may write into: README.md and every page under docs/."""
    readme = Path(paths.REPO_ROOT) / "README.md"
    return ([readme] if readme.exists() else []) + sorted(Path(paths.DOCS_DIR).glob("*.md"))


def pages_with_section(name: str, pages: list[Path] | None = None) -> list[Path]:
    """The pages that hold the markers of section `name`."""
    return [page for page in (published_pages() if pages is None else pages) if _markers(name).search(page.read_text())]


def section_text(name: str, page: Path) -> str | None:
    """What a page holds between the markers of section `name` (None without the markers)."""
    found = _markers(name).search(page.read_text())
    return None if found is None else found.group(0)[len(found.group(1)):-len(found.group(2))].rstrip("\n")


def update_readme_section(name: str, content: str, readme: Path | None = None) -> bool:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` in `readme`, or, without it, in
    every page that holds those markers (README.md or docs/*.md: a table keeps its markers wherever it moves).
    False if no page holds them."""
    written = False
    for page in pages_with_section(name, None if readme is None else [readme]):
        text = page.read_text()
        page.write_text(_markers(name).sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(2), text))
        written = True
    return written


def plot_loss_curves(log_history: list[dict], path: Path | None = None, title: str = ""):
    """Train loss per logging step and dev loss per evaluation, from a Trainer's `state.log_history`."""
    history = pd.DataFrame(log_history)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = history.dropna(subset=["loss"])
    ax.plot(train["step"], train["loss"], label="train loss")
    if "eval_loss" in history:
        evals = history.dropna(subset=["eval_loss"])
        ax.plot(evals["step"], evals["eval_loss"], "o-", label="dev loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
