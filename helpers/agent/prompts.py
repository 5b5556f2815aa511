"""The agent's prompts and the parser of its JSON {thought, action} replies.

Three layouts of the same information:
- `seed`: the capstone's template: one user message holding the instruction and the whole history as JSON;
- `compact`: the same in a few words, for small models trained on a CPU;
- `episode`: a multi-turn chat (instruction, then per step an assistant turn with the JSON and a user turn
  with the code's output). A whole expert episode is then one training sequence, and the agent at
  inference sees exactly that layout, one assistant turn per step.
"""
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

EPISODE_SYSTEM_PROMPT = (
    "You operate apps by writing Python. Call them as apis.<app>.<api>(...); "
    "apis.api_docs.show_api_doc(app_name=..., api_name=...) describes an API. "
    'Answer every message with one JSON object {"thought": "...", "action": "<python code>"}; '
    "the next message shows what the code printed. Variables persist between steps. "
    "When done, call apis.supervisor.complete_task() (answer=... if asked a question, "
    'status="fail" if it cannot be done).'
)
EPISODE_INSTRUCTION = "Instruction: {instruction}"
EPISODE_OUTPUT = "Output:\n{observation}"

STYLES = {"seed": (SYSTEM_PROMPT, USER_TEMPLATE), "compact": (COMPACT_SYSTEM_PROMPT, COMPACT_USER_TEMPLATE),
          "episode": (EPISODE_SYSTEM_PROMPT, EPISODE_INSTRUCTION)}


@dataclass(frozen=True)
class PromptFormat:
    """Which layout, and how much of each observation the prompt keeps.

    `seed` is the capstone's full template; `compact` says the same in a few words. Both cut older
    observations shorter (`history_observation_chars`) than the latest (`latest_observation_chars`).
    `episode` is a multi-turn chat whose every observation turn keeps `observation_chars`: the chat
    must read the same at every step, as it did in the one training sequence of its episode.
    """

    style: str = "seed"
    history_observation_chars: int = 400
    latest_observation_chars: int = 2000
    observation_chars: int = 300

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"Unknown prompt style '{self.style}': choose one of {', '.join(STYLES)}.")

    def as_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict) -> "PromptFormat":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_profile(cls, params: dict) -> "PromptFormat":
        """The format a profile's parameters name (`prompt_style` and the observation limits); defaults for the rest."""
        data = dict(params)
        if "prompt_style" in data:
            data["style"] = data["prompt_style"]
        return cls.from_dict(data)


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
    if prompt_format.style == "episode":
        return episode_chat(instruction, list(history), prompt_format)
    system, template = STYLES[prompt_format.style]
    user = template.format(instruction=instruction, history=render_history(history, prompt_format))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def assistant_turn(step: StepLike) -> str:
    """What the agent wrote at a step: the JSON it was trained to write, or its unparseable reply as written."""
    if getattr(step, "error_kind", None) == "parse_error":
        return step.action  # the raw reply: the model should see what it actually wrote
    return format_completion(step.thought, step.action)


def episode_chat(instruction: str, steps: list, prompt_format: PromptFormat, final_reply: bool = False) -> list[dict]:
    """The episode layout: system, instruction, then an assistant turn and an output turn per step.

    With `final_reply` the last step's output turn is left out, so the chat ends with the agent's last
    reply: a whole episode as one training conversation.
    """
    chat = [{"role": "system", "content": EPISODE_SYSTEM_PROMPT},
            {"role": "user", "content": EPISODE_INSTRUCTION.format(instruction=instruction)}]
    for index, step in enumerate(steps):
        chat.append({"role": "assistant", "content": assistant_turn(step)})
        if not (final_reply and index == len(steps) - 1):
            observation = _clip(step.observation, prompt_format.observation_chars)
            chat.append({"role": "user", "content": EPISODE_OUTPUT.format(observation=observation)})
    return chat


# where each template puts the instruction: `instruction_of` reads it back
_INSTRUCTION = re.compile(r"^Instruction: ([^\n]*)|^User Instruction:\n```(.*?)```", re.MULTILINE | re.DOTALL)


def instruction_of(prompt: list[dict]) -> str:
    """The user instruction inside a prompt made by `build_prompt` (any style); "" if there is none."""
    # seed and compact put it in the last message; the episode layout in the first user message
    first_user = next((m for m in prompt if m["role"] == "user"), None)
    for message in (prompt[-1], first_user):
        match = _INSTRUCTION.search(message["content"]) if message is not None else None
        if match:
            return match.group(1) or match.group(2)
    return ""


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
