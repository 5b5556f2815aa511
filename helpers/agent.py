"""The ReAct agent for language models: build the prompt, ask a backend for a reply, parse it into an action."""
from __future__ import annotations

from typing import Callable, Sequence

from helpers.episode import Action, Step
from helpers.prompts import ActionParseError, PromptFormat, build_prompt, parse_action, parse_error_observation
from helpers.tasks.schema import Task

Generate = Callable[[list[dict]], str]


class ModelPolicy:
    """A policy that asks a model for each step. `generate(messages) -> reply text` is the backend."""

    def __init__(self, name: str, generate: Generate, prompt_format: PromptFormat = PromptFormat()):
        self.name = name
        self.generate = generate
        self.prompt_format = prompt_format

    def act(self, task: Task, history: Sequence[Step]) -> Action:
        return reply_to_action(self.generate(build_prompt(task.instruction, history, self.prompt_format)))


def reply_to_action(reply: str) -> Action:
    """A parsed action, or an action carrying the parse-error observation (it costs a step)."""
    try:
        parsed = parse_action(reply)
    except ActionParseError as error:
        return Action(thought="", code="", parse_error=parse_error_observation(error), raw=reply)
    return Action(parsed.thought, parsed.code, raw=reply)
