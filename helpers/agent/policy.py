"""The ReAct agent for language models: build each prompt, ask a backend for all replies at once, parse them."""
from __future__ import annotations

from typing import Sequence

from helpers.agent.backends import Backend
from helpers.agent.prompts import ActionParseError, PromptFormat, build_prompt, parse_action, parse_error_observation
from helpers.harness.episode import Action, Step
from helpers.tasks.schema import Task


class ModelPolicy:
    """A policy that asks a model for each step; many episodes' steps go to the backend as one batch."""

    def __init__(self, backend: Backend, prompt_format: PromptFormat = PromptFormat(), name: str | None = None):
        self.backend = backend
        self.prompt_format = prompt_format
        self.name = name or backend.name

    def act(self, task: Task, history: Sequence[Step]) -> Action:
        return self.act_batch([task], [history])[0]

    def act_batch(self, tasks: Sequence[Task], histories: Sequence[Sequence[Step]]) -> list[Action]:
        prompts = [build_prompt(t.instruction, h, self.prompt_format) for t, h in zip(tasks, histories)]
        return [reply_to_action(reply) for reply in self.backend.generate(prompts)]


def reply_to_action(reply: str) -> Action:
    """A parsed action, or an action carrying the parse-error observation (it costs a step)."""
    try:
        parsed = parse_action(reply)
    except ActionParseError as error:
        return Action(thought="", code="", parse_error=parse_error_observation(error), raw=reply)
    return Action(parsed.thought, parsed.code, raw=reply)
