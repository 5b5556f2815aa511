"""Preference pairs: a verified expert step (chosen) against a plausible wrong step verified to fail."""
from __future__ import annotations

import json
import random
import re
from typing import Callable, Iterable, Iterator

from helpers.agent.prompts import ActionParseError, PromptFormat, build_prompt, format_completion, parse_action
from helpers.data.stepwise import verified_steps
from helpers.harness.episode import Episode, replay
from helpers.tasks.grading import unclaimed_changes
from helpers.tasks.schema import Task


def _invalid_json(thought: str, action: str, context: dict) -> str | None:
    # the code pasted raw into the object: a common failure of small models
    return '{"thought": "' + thought + '", "action": ' + action + "}"


def _failing_code(thought: str, action: str, context: dict) -> str | None:
    calls = re.findall(r"apis\.(\w+)\.(\w+)\(", action)
    if not calls:
        return None
    app, api = calls[-1]
    return format_completion(thought, action.replace(f"apis.{app}.{api}(", f"apis.{app}.{api[:-1]}(", 1))


def _skipped_login(thought: str, action: str, context: dict) -> str | None:
    following = context.get("next_action")
    if "apis.wallet.login(" not in action or not following:
        return None
    return format_completion("I can skip logging in and go straight to the next step.", following)


def _wrong_amount(thought: str, action: str, context: dict) -> str | None:
    match = re.search(r"amount=(\d+(?:\.\d+)?)", action)
    if not match:
        return None
    wrong = float(match.group(1)) + context["rng"].choice((1, 5, 10, 0.5))
    text = f"{wrong:.0f}" if wrong.is_integer() else f"{wrong:.2f}"
    return format_completion(thought, action[:match.start(1)] + text + action[match.end(1):])


def _wrong_person(thought: str, action: str, context: dict) -> str | None:
    target = re.search(r"(receiver_email|user_email)=\w+\[\"email\"\]", action)
    others = context["other_emails"]
    if not target or not others:
        return None
    wrong = context["rng"].choice(others)
    return format_completion(thought, action[:target.start()] + f"{target.group(1)}={json.dumps(wrong)}"
                             + action[target.end():])


def _premature_completion(thought: str, action: str, context: dict) -> str | None:
    if "complete_task" in action:
        return None
    return format_completion("I think the task is already done.", "apis.supervisor.complete_task()")


CORRUPTIONS: dict[str, Callable[[str, str, dict], str | None]] = {
    "invalid_json": _invalid_json,
    "failing_code": _failing_code,
    "skipped_login": _skipped_login,
    "wrong_amount": _wrong_amount,
    "wrong_person": _wrong_person,
    "premature_completion": _premature_completion,
}


SPECIFIC_KINDS = ("wrong_amount", "wrong_person", "skipped_login")


def why_rejected(task: Task, prior_actions: list[str], completion: str) -> str | None:
    """Why this reply is wrong in this state (it fails, or breaks a check), or None if it is not shown wrong."""
    try:
        code = parse_action(completion).code
    except ActionParseError as error:
        return f"reply does not parse: {error}"
    with replay(task, prior_actions) as env:
        result = env.execute(code)
        if not result.ok:
            return f"code fails ({result.error_kind}): {result.error_message[:160]}"
        if env.world.completed:
            result = env.grade()
            if not result.success:
                failed = [c.name for c in result.checks if not c.passed]
                return "completes the task with failing checks: " + "; ".join(failed)
            return None
        extra = unclaimed_changes(task, env.world.state)
        return "changes the world wrongly: " + "; ".join(c.describe() for c in extra) if extra else None


def preference_pairs(episodes: Iterable[Episode], seed: int = 0, prompt_format: PromptFormat = PromptFormat()) -> Iterator[dict]:
    """One pair per expert step for which a corruption is verified wrong; kinds vary at random (seeded)."""
    rng = random.Random(seed)
    for episode in episodes:
        task = episode.task
        actions = [s.action for s in episode.steps]
        me = task.world.supervisor.email
        other_emails = [u.email for u in task.world.wallet.users if u.email != me]
        for index, chosen in verified_steps(episode):
            step = episode.steps[index]
            # a corruption that turns out right (e.g. the "wrong" person is the right one) fails verification
            context = {"rng": rng, "next_action": actions[index + 1] if index + 1 < len(actions) else None,
                       "other_emails": other_emails}
            # mistakes about the task itself first, when they apply; format and code slips otherwise
            specific, generic = list(SPECIFIC_KINDS), [k for k in CORRUPTIONS if k not in SPECIFIC_KINDS]
            rng.shuffle(specific)
            rng.shuffle(generic)
            kinds = specific + generic
            for kind in kinds:
                rejected = CORRUPTIONS[kind](step.thought, step.action, context)
                if rejected is None or rejected == chosen:
                    continue
                reason = why_rejected(task, actions[:index], rejected)
                if reason is None:
                    continue
                yield {
                    "prompt": build_prompt(task.instruction, episode.steps[:index], prompt_format),
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "kind": kind, "reason": reason, "task_id": task.id, "scenario": task.scenario, "step": index,
                }
                break
