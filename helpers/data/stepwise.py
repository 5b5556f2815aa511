"""Step-wise prompt/completion records from expert trajectories, each verified by execution."""
from __future__ import annotations

from typing import Iterable, Iterator

from helpers.agent.prompts import PromptFormat, build_prompt, format_completion, parse_action
from helpers.harness.episode import Episode

class UnverifiedStep(RuntimeError):
    """A trajectory step that does not hold up: its reply does not parse back or its code failed."""


def verified_steps(episode: Episode) -> Iterator[tuple[int, str]]:
    """Yield (step index, completion text) for a successful episode, checking every step on the way."""
    if not episode.result.success:
        raise UnverifiedStep(f"{episode.task.id}: the trajectory does not solve its task")
    for index, step in enumerate(episode.steps):
        completion = format_completion(step.thought, step.action)
        if parse_action(completion).code != step.action:
            raise UnverifiedStep(f"{episode.task.id} step {index}: the completion does not parse back to its code")
        if not step.ok:
            raise UnverifiedStep(f"{episode.task.id} step {index}: the action failed ({step.error_kind}): "
                                 f"{step.observation[:200]}")
        yield index, completion


def stepwise_records(episodes: Iterable[Episode], split: str, prompt_format: PromptFormat = PromptFormat()) -> Iterator[dict]:
    """One record per step in TRL's conversational prompt/completion format, with provenance columns.

    The prompt holds the instruction and the history so far (the last element is the latest
    action and its observation); the completion is the JSON {thought, action} of the next step.
    Its action ran without error in exactly that state while the trajectory was recorded.
    """
    for episode in episodes:
        task = episode.task
        for index, completion in verified_steps(episode):
            yield {
                "prompt": build_prompt(task.instruction, episode.steps[:index], prompt_format),
                "completion": [{"role": "assistant", "content": completion}],
                "task_id": task.id, "scenario_id": task.scenario_id, "scenario": task.scenario,
                "difficulty": task.difficulty, "step": index, "split": split,
                # what restores this step's world: replay these actions in the task's initial world
                "prior_actions": [s.action for s in episode.steps[:index]],
            }
