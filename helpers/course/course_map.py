"""The README's course map: one row per notebook, with its minutes from a published run of the default profile.

The ideas and outputs are written here, once; the minutes come from the run record (`pipeline.json`), so the
pipeline rewrites the map (between its markers) whenever it publishes a run of the default profile.
"""
from __future__ import annotations

import os

from helpers.course.colab import REPOSITORY

COURSE_MAP_SECTION = "course-map"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

# notebook: (title, the one idea it teaches, what it leaves behind for the next ones)
NOTEBOOKS = {
    "00_world_tour": ("World tour", "the apps, a task and its checks, the sandbox, the scripted expert",
                      "task splits; the expert's scores"),
    "01_data_generation": ("Data generation", "training data verified by running it: whole expert episodes as chats",
                           "episode chats, step records, simulated-user chats, preference pairs"),
    "02_sft_full": ("Full SFT", "fine-tune every weight, with the loss on the agent's turns only",
                    "the full-SFT model; loss curve; dev action match"),
    "03_sft_lora": ("LoRA", "train small low-rank adapters instead, then merge them",
                    "adapter and merged model; dev perplexity"),
    "04_grpo": ("GRPO", "reinforcement learning on whole episodes, rewarded by the graded world",
                "the GRPO model; reward curves"),
    "05_base_inference": ("Base inference", "the agent loop, and the harness that scores any model on held-out tasks",
                          "scores of the base model and the expert"),
    "06_finetuned_inference": ("Fine-tuned inference", "every model side by side, and what the best one gets wrong",
                               "results table, plots, failure analysis"),
}


def colab_link(notebook: str) -> str:
    base = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/")
    return f"{base}/blob/main/notebooks/{notebook}.ipynb"


def course_map(run: dict, cpus: int | None = None) -> str:
    """The course map as a markdown table, with each notebook's minutes in `run` (a pipeline record) made on a
    machine of `cpus` cores (this one's by default: the pipeline publishes as soon as its run ends)."""
    minutes = {n["notebook"]: n["seconds"] / 60 for n in run["notebooks"] if n.get("seconds") is not None}
    # a notebook not described above still gets its row (tests/test_docs.py asks for its description)
    described = {**NOTEBOOKS, **{name: (name[3:], "", "") for name in minutes if name not in NOTEBOOKS}}
    rows = ["| notebook | idea | minutes | outputs | Colab |", "|---|---|---|---|---|"]
    for notebook, (title, idea, outputs) in sorted(described.items()):
        took = f"{minutes[notebook]:.1f}" if notebook in minutes else "not run"
        rows.append(f"| [{notebook[:2]} {title}](notebooks/{notebook}.ipynb) | {idea} | {took} | {outputs} | "
                    f"[![Open in Colab]({BADGE})]({colab_link(notebook)}) |")
    commit = str(run.get("git_commit", "unknown"))[:12]
    return "\n".join(rows) + (f"\n\nMinutes: the whole run of `{run['profile']}` at commit `{commit}` on "
                              f"{cpus or os.cpu_count()} CPU cores, {run['seconds'] / 60:.1f} in all.")
