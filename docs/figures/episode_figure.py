"""Draw one episode, as the agent lives it, into docs/figures/episode.svg (the README's figure).

The episode is real: the scripted expert solves the example task of data/examples/example_task.jsonl in the
sandbox, and every thought, line of code, output and check in the figure is what that run produced. Run it
again after the expert, the world or the example changes:

    .venv/bin/python docs/figures/episode_figure.py
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere: the helpers package sits at the root

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from helpers.agent.expert import ExpertPolicy  # noqa: E402
from helpers.harness.episode import run_episode  # noqa: E402
from helpers.tasks import load_tasks  # noqa: E402

EXAMPLE = REPO_ROOT / "data" / "examples" / "example_task.jsonl"
OUTPUT = REPO_ROOT / "docs" / "figures" / "episode.svg"
SHOWN_IN_FULL = (0, 4, 5)  # the first step, the payment, the completion; the others in one line each
LANES = {"you": "#dbe9f6", "model": "#dff0d8", "sandbox": "#eeeeee", "grader": "#fcf3cf"}
WIDTH = 96  # characters per line inside a box
LINE = 0.19  # inches per line of text


def _wrap(text: str, limit: int = 2) -> list[str]:
    lines = text.splitlines()
    wrapped = [part for line in lines for part in (textwrap.wrap(line, WIDTH) or [""])]
    shown = wrapped[:limit]
    if len(wrapped) > limit:  # the rest is cut: say so on the last line shown
        shown[-1] += " …"
    return shown


def episode_rows() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(lane, title, [(style, text line)]) for each box of the figure, from a real expert episode."""
    task = load_tasks(EXAMPLE)[0]
    episode = run_episode(task, ExpertPolicy())
    rows = [("you", "the instruction", [("sans", f"Instruction: {task.instruction}")])]
    skipped = []
    for number, step in enumerate(episode.steps):
        if number not in SHOWN_IN_FULL:
            skipped.append(("small", f"step {number + 1}: {step.thought}"))
            continue
        if skipped:
            rows.append(("model", "… the steps between, each a reply and its output", skipped))
            skipped = []
        reply = [("thought", line) for line in _wrap(f'"thought": {step.thought}')]
        reply += [("code", line) for line in _wrap(step.action, limit=3)]
        rows.append(("model", f"step {number + 1}: the model's reply", reply))
        rows.append(("sandbox", "its code runs; what it printed comes back",
                     [("code", line) for line in _wrap(f"Output: {step.observation}", limit=1)]))
    checks = [("sans", f"{'✓' if c.passed else '✗'} {c.name}") for c in episode.result.checks]
    rows.append(("grader", "the final world, graded against the initial one "
                           f"({'success' if episode.result.success else 'failure'})", checks))
    return rows


def draw(rows, path: Path = OUTPUT) -> Path:
    heights = [LINE * (len(lines) + 1) + 0.22 for _, _, lines in rows]
    gap = 0.22
    total = sum(heights) + gap * (len(rows) - 1) + 0.2
    fig = plt.figure(figsize=(10.5, total))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 10.5)
    ax.set_ylim(0, total)
    ax.axis("off")
    styles = {"sans": {"family": "DejaVu Sans", "size": 9.5}, "thought": {"family": "DejaVu Sans", "size": 9,
              "style": "italic", "color": "#1d5a1d"}, "code": {"family": "DejaVu Sans Mono", "size": 8.3},
              "small": {"family": "DejaVu Sans", "size": 8.3, "color": "#444444"}}
    top = total - 0.1
    for index, ((lane, title, lines), height) in enumerate(zip(rows, heights)):
        bottom = top - height
        ax.add_patch(FancyBboxPatch((1.35, bottom), 9.0, height, boxstyle="round,pad=0,rounding_size=0.08",
                                    facecolor=LANES[lane], edgecolor="#888888", linewidth=0.8))
        ax.text(1.2, top - 0.16, lane, ha="right", va="top", family="DejaVu Sans", size=10, weight="bold")
        ax.text(1.5, top - 0.1, title, ha="left", va="top", family="DejaVu Sans", size=8, color="#555555")
        for number, (style, line) in enumerate(lines):
            ax.text(1.5, top - 0.1 - LINE * (number + 1), line, ha="left", va="top", **styles[style])
        if index < len(rows) - 1:
            ax.annotate("", xy=(5.85, bottom - gap + 0.02), xytext=(5.85, bottom - 0.02),
                        arrowprops={"arrowstyle": "-|>", "color": "#777777", "lw": 1})
        top = bottom - gap
    # fixed ids and no date: the same episode draws the same file, so a changed figure means a changed episode
    with plt.rc_context({"svg.hashsalt": "episode"}):
        fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    print("written:", draw(episode_rows(), Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT))
