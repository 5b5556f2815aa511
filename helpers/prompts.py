"""The agent's prompt (the seed capstone's template) and the parser of its JSON {thought, action} replies."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Iterable, Protocol

SYSTEM_PROMPT = """You are an intelligent AI Assistant whose job is to achieve the user's instruction completely autonomously.
To do this, you will need to interact with app/s (e.g. wallet) using their associated APIs on my behalf. For this you will undertake a *multi-step conversation* using a python REPL environment. That is, you will write the python code and the environment will execute it and show you the result, based on which, you will write python code for the next step and so on, until you've achieved the goal. This environment will let you interact with app/s using their associated APIs on my behalf.

Here are three key APIs that you need to know to get more information

# To get a list of apps that are available to you.
apis.api_docs.show_app_descriptions()

# To get the list of apis under any app listed above, e.g. supervisor
apis.api_docs.show_api_descriptions(app_name='supervisor')

# To get the specification of a particular api, e.g. supervisor app's show_account_passwords
apis.api_docs.show_api_doc(app_name='supervisor', api_name='show_account_passwords')

When the task is done, call apis.supervisor.complete_task() (with answer=... if the task asks a question, or status="fail" if it cannot be done)."""

USER_TEMPLATE = """User Instruction:
```{instruction}```
The following list contains the ordered history of actions already taken and the corresponding outputs. The last element of the list represents the latest action and its observation:
```{history}```

Based on User instruction, history of steps taken and outputs, decide your next step.
Respond with the action to take and the thought behind it.

Respond in the following json format:
{{"thought": "...", "action": "..."}}"""

PARSE_ERROR_OBSERVATION = (
    "Your reply could not be used: {reason}. "
    'Reply with one JSON object only: {{"thought": "<why>", "action": "<python code>"}}.'
)


class StepLike(Protocol):
    thought: str
    action: str
    observation: str


COMPACT_SYSTEM_PROMPT = 'Reply with JSON {"thought": "...", "action": "<python calling apis.<app>.<api>(...)>"}.'

COMPACT_USER_TEMPLATE = """Instruction: {instruction}
History: {history}
Next step as JSON:"""

STYLES = {"seed": (SYSTEM_PROMPT, USER_TEMPLATE), "compact": (COMPACT_SYSTEM_PROMPT, COMPACT_USER_TEMPLATE)}


@dataclass(frozen=True)
class PromptFormat:
    """Which template, and how much of each observation the prompt keeps (older ones are cut shorter).

    `seed` is the capstone's full template; `compact` says the same in a few words, for small models
    trained on a CPU where every prompt token costs training time.
    """

    style: str = "seed"
    history_observation_chars: int = 400
    latest_observation_chars: int = 2000

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"Unknown prompt style '{self.style}': choose one of {', '.join(STYLES)}.")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _clipped(steps: list, prompt_format: "PromptFormat") -> list[tuple[str, str, str]]:
    last = len(steps) - 1
    return [(s.thought, s.action, _clip(s.observation, prompt_format.latest_observation_chars if i == last
                                         else prompt_format.history_observation_chars))
            for i, s in enumerate(steps)]


def render_history(history: Iterable[StepLike], prompt_format: PromptFormat = PromptFormat()) -> str:
    """The seed style: a JSON list of {thought, action, observation}.

    The compact style is plain text without escapes, and leaves out past thoughts: the code already
    says what was done, and every token saved is training time saved on a CPU.
    """
    steps = _clipped(list(history), prompt_format)
    if prompt_format.style == "seed":
        return json.dumps([{"thought": t, "action": a, "observation": o} for t, a, o in steps], ensure_ascii=False)
    if not steps:
        return "(none yet)"
    return "".join(f"\n>>> {a}\n{o}" for _, a, o in steps)


def build_prompt(instruction: str, history: Iterable[StepLike],
                 prompt_format: PromptFormat = PromptFormat()) -> list[dict]:
    """The conversational prompt for the next step: system preamble, then instruction and history."""
    system, template = STYLES[prompt_format.style]
    user = template.format(instruction=instruction, history=render_history(history, prompt_format))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# where each template puts the instruction: `instruction_of` reads it back
_INSTRUCTION = re.compile(r"^Instruction: ([^\n]*)|^User Instruction:\n```(.*?)```", re.MULTILINE | re.DOTALL)


def instruction_of(prompt: list[dict]) -> str:
    """The user instruction inside a prompt made by `build_prompt` (either style); "" if there is none."""
    match = _INSTRUCTION.search(prompt[-1]["content"])
    return (match.group(1) or match.group(2)) if match else ""


def format_completion(thought: str, action: str) -> str:
    """The target reply: one JSON object with the thought and the code."""
    return json.dumps({"thought": thought, "action": action}, ensure_ascii=False)


class ActionParseError(ValueError):
    """A model reply that holds no usable {thought, action}; str() is the reason."""


@dataclass(frozen=True)
class ParsedAction:
    thought: str
    code: str


_FENCE = re.compile(r"```(?:json|JSON|python)?\s*\n?(.*?)```", re.DOTALL)


def parse_action(reply: str) -> ParsedAction:
    """Read {thought, action} from a reply: tolerates code fences, text around the object and single quotes."""
    candidates = [m.group(1) for m in _FENCE.finditer(reply)] + [reply]
    for text in candidates:
        start, end = text.find("{"), text.rfind("}")
        if start == -1 or end <= start:
            continue
        data = _load_object(text[start:end + 1])
        if data is None:
            continue
        if not isinstance(data.get("action"), str) or not data["action"].strip():
            raise ActionParseError('the JSON object has no non-empty "action" string')
        thought = data.get("thought", "")
        code = _strip_code_fence(data["action"])
        return ParsedAction(str(thought) if thought is not None else "", code)
    raise ActionParseError("no JSON object with a thought and an action was found")


def _load_object(text: str) -> dict | None:
    # strict=False: models often put raw newlines inside JSON strings
    for load in (json.JSONDecoder(strict=False).decode, ast.literal_eval):
        try:
            data = load(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _strip_code_fence(code: str) -> str:
    match = re.fullmatch(r"\s*```(?:python|py)?\s*\n(.*?)\n?```\s*", code, re.DOTALL)
    return match.group(1) if match else code.strip("\n")


def parse_error_observation(error: ActionParseError) -> str:
    return PARSE_ERROR_OBSERVATION.format(reason=str(error))
