"""Episode records: one verified expert episode as one multi-turn chat, trained with loss on assistant turns only.

A step-wise record repeats the whole history in its prompt, so an episode of n steps costs about n
times its own length in training tokens; as one chat it costs its length once, for the same
supervision (every assistant turn is a target, each seeing exactly the turns before it).
"""
from __future__ import annotations

from typing import Iterable, Iterator

from helpers.agent.prompts import PromptFormat, episode_chat
from helpers.data.stepwise import verified_steps
from helpers.harness.episode import Episode


def episode_records(episodes: Iterable[Episode], split: str,
                    prompt_format: PromptFormat = PromptFormat("episode")) -> Iterator[dict]:
    """One `{"messages": [...]}` record per successful episode, every step verified as for step records."""
    if prompt_format.style != "episode":
        raise ValueError(f"Episode records need the 'episode' prompt style, not '{prompt_format.style}'.")
    for episode in episodes:
        task = episode.task
        steps = [episode.steps[index] for index, _ in verified_steps(episode)]
        yield {
            "messages": episode_chat(task.instruction, steps, prompt_format, final_reply=True),
            "task_id": task.id, "scenario_id": task.scenario_id, "scenario": task.scenario,
            "difficulty": task.difficulty, "steps": len(steps), "split": split,
        }
