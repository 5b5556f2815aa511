"""Single-step GRPO rewards (`grpo_mode: step`): one float per completion, each run in its own restored world.

Every prompt carries what restores its world (the task id and the expert's actions so far); a
completion's code runs in a fresh sandbox brought to that state, in parallel with the others.
Reward hacking is closed off by construction: text that only prints, an empty action, or calling
complete_task before the work is done earns nothing positive overall.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from helpers.agent.prompts import ActionParseError, parse_action
from helpers.harness.episode import replay
from helpers.sandbox import Limits
from helpers.tasks.grading import unclaimed_changes, world_changes
from helpers.tasks.schema import Task

REWARD_LIMITS = Limits(step_wall_seconds=2.0, step_cpu_seconds=1.0)


@dataclass(frozen=True)
class Outcome:
    """What one completion did when run in its prompt's world."""

    parsed: bool
    errored: bool = False
    api_calls: int = 0
    completed: bool = False
    success: bool = False
    collateral: bool = False
    progress: int = 0  # positive checks newly satisfied by this action


def completion_text(completion) -> str:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return completion or ""


def run_completion(task: Task, prior_actions: Sequence[str], text: str) -> Outcome:
    try:
        code = parse_action(text).code
    except ActionParseError:
        return Outcome(parsed=False)
    if not code.strip():
        return Outcome(parsed=True, errored=True)
    with replay(task, prior_actions, REWARD_LIMITS) as env:
        before = len(world_changes(task.world, env.world.state))
        result = env.execute(code)
        errored = not result.ok
        calls = result.successful_api_calls
        if env.world.completed:
            return Outcome(True, errored, calls, completed=True, success=env.grade().success)
        collateral = bool(unclaimed_changes(task, env.world.state))
        progress = len(world_changes(task.world, env.world.state)) - before
        return Outcome(True, errored, calls, collateral=collateral, progress=max(progress, 0) if not collateral else 0)


class ExecutionRewards:
    """Runs every completion once per batch and serves the three reward functions from the same outcomes."""

    def __init__(self, tasks: dict[str, Task], workers: int = 4):
        self.tasks = tasks
        self.workers = workers
        self._cache: dict[tuple, Outcome] = {}

    def outcomes(self, completions, task_id, prior_actions) -> list[Outcome]:
        keys = [(t, json.dumps(list(p)), completion_text(c)) for c, t, p in zip(completions, task_id, prior_actions)]
        missing = [k for k in dict.fromkeys(keys) if k not in self._cache]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = pool.map(lambda k: run_completion(self.tasks[k[0]], json.loads(k[1]), k[2]), missing)
            self._cache.update(zip(missing, results))
        outcomes = [self._cache[k] for k in keys]
        if len(self._cache) > 4096:  # outcomes are only reused within one batch's reward functions
            self._cache.clear()
        return outcomes

    def format_reward(self, completions, **kwargs) -> list[float]:
        """0.5 for one JSON object with a thought and a non-empty action, else 0."""
        scores = []
        for completion in completions:
            text = completion_text(completion).strip()
            try:
                data = json.loads(text)
                ok = isinstance(data, dict) and isinstance(data.get("thought"), str) \
                    and isinstance(data.get("action"), str) and bool(data["action"].strip())
            except json.JSONDecodeError:
                ok = False
            scores.append(0.5 if ok else 0.0)
        return scores

    def execution_reward(self, completions, task_id, prior_actions, **kwargs) -> list[float]:
        """The seed's rule: -1 if the code fails (or cannot be read), +1 if it runs; code that calls no app
        at all (printing a fake success, say) gets -0.5: every real step of these tasks calls an API."""
        scores = []
        for o in self.outcomes(completions, task_id, prior_actions):
            if not o.parsed or o.errored:
                scores.append(-1.0)
            else:
                scores.append(1.0 if o.api_calls > 0 else -0.5)
        return scores

    def goal_reward(self, completions, task_id, prior_actions, **kwargs) -> list[float]:
        """+2 for completing the task with every check passing, -2 for completing it wrongly or collateral
        damage, +0.5 per change the task's checks ask for, else 0."""
        scores = []
        for o in self.outcomes(completions, task_id, prior_actions):
            if o.completed:
                scores.append(2.0 if o.success else -2.0)
            elif o.collateral:
                scores.append(-2.0)
            else:
                scores.append(0.5 * o.progress)
        return scores

    @property
    def functions(self) -> list:
        """The reward functions in the order GRPOTrainer should log them."""
        return [self.format_reward, self.execution_reward, self.goal_reward]
