"""Running one task from start to grade: a policy proposes code, the sandbox runs it against the world."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from helpers.sandbox import Limits, Sandbox
from helpers.sandbox.result import ErrorKind, StepResult
from helpers.tasks.grading import TaskResult, grade
from helpers.tasks.schema import Task
from helpers.world import World
from helpers.world.state import WorldState

DEFAULT_MAX_STEPS = 20
# An agent whose replies hold no usable action this many times in a row is not going to recover: its episode
# ends there (a base model that rambles then costs three generations per task, not the whole step budget).
MAX_UNREADABLE_REPLIES = 3


class Policy(Protocol):
    name: str

    def act(self, task: Task, history: Sequence["Step"]) -> "Action":
        """Return the next action given the steps so far (thought, action, observation each)."""

    def act_batch(self, tasks: Sequence[Task], histories: Sequence[Sequence["Step"]]) -> list["Action"]:
        """The next action of several episodes at once (one batched generation for a model)."""


@dataclass(frozen=True)
class Action:
    """One agent step: why, and the Python code to run (or why the reply held no usable code)."""

    thought: str
    code: str
    parse_error: str | None = None
    raw: str = ""  # the model's reply as written, kept in the history when it could not be parsed
    gave_up: str | None = None  # the policy cannot go on with this task, and why: the episode ends and is graded


@dataclass
class Step:
    """One step of an episode. `ok` and `error_kind` come from the step's StepResult (or say that the reply
    could not be parsed): read them, not the observation text, to learn whether the step failed."""

    thought: str
    action: str
    observation: str
    ok: bool = True
    error_kind: str | None = None
    api_calls: int = 0  # calls to an app that the app accepted

    @classmethod
    def from_result(cls, thought: str, action: str, result: StepResult) -> "Step":
        return cls(thought, action, result.observation, result.ok,
                   result.error_kind.value if result.error_kind is not None else None, result.successful_api_calls)


@dataclass
class Episode:
    task: Task
    steps: list[Step] = field(default_factory=list)
    result: TaskResult | None = None
    final_state: WorldState | None = None
    error: str = ""  # why the episode ended without completing the task, if it did
    seconds: float = 0.0


class Environment:
    """A task's world plus the sandbox that runs code against it; one per episode."""

    def __init__(self, task: Task, limits: Limits = Limits(), seed: int = 0):
        self.task = task
        self.world = World(task.world)
        self.sandbox = Sandbox(self.world.call, now=task.world.now, limits=limits, seed=seed)

    def execute(self, code: str) -> StepResult:
        return self.sandbox.execute(code)

    @property
    def done(self) -> bool:
        return self.world.completed or not self.sandbox.alive

    def grade(self) -> TaskResult:
        return grade(self.task, self.world.state, self.world.completion)

    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> "Environment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def take_action(env: Environment, episode: Episode, action: Action) -> None:
    """Apply one action to an episode: run its code, or record why it could not run; may end the episode."""
    if action.gave_up:  # nothing runs; the episode ends here
        episode.error = action.gave_up
    elif action.parse_error:  # a reply that could not be parsed costs a step: its observation says what was wrong
        episode.steps.append(Step(action.thought, action.raw, action.parse_error, ok=False,
                                  error_kind=ErrorKind.PARSE_ERROR.value))
        recent = episode.steps[-MAX_UNREADABLE_REPLIES:]
        if len(recent) == MAX_UNREADABLE_REPLIES and all(s.error_kind == ErrorKind.PARSE_ERROR for s in recent):
            episode.error = f"{MAX_UNREADABLE_REPLIES} replies in a row held no usable action"
    else:
        episode.steps.append(Step.from_result(action.thought, action.code, env.execute(action.code)))


def finish_episode(env: Environment, episode: Episode, max_steps: int, started: float) -> Episode:
    """Grade an episode that has ended (or hit the step limit) and close its environment."""
    if not env.world.completed and not episode.error:
        episode.error = "sandbox ended" if not env.sandbox.alive else f"no complete_task within {max_steps} steps"
    episode.result = env.grade()
    episode.final_state = env.world.state
    episode.seconds = time.perf_counter() - started
    env.close()
    return episode


def run_episode(task: Task, policy: Policy, limits: Limits = Limits(), max_steps: int = DEFAULT_MAX_STEPS,
                seed: int = 0) -> Episode:
    """Let the policy act until it completes the task, the step limit is hit, or the sandbox dies."""
    started = time.perf_counter()
    episode = Episode(task)
    env = Environment(task, limits, seed)
    try:
        while len(episode.steps) < max_steps and not env.done and not episode.error:
            take_action(env, episode, policy.act(task, episode.steps))
    except BaseException:
        env.close()
        raise
    return finish_episode(env, episode, max_steps, started)


def run_episodes(tasks: Sequence[Task], policy: Policy, limits: Limits = Limits(), max_steps: int = DEFAULT_MAX_STEPS,
                 batch_size: int = 32, seed: int = 0, on_done: Callable[[Episode], None] | None = None) -> list[Episode]:
    """Advance up to `batch_size` episodes together: one `act_batch` call (one generation batch) per round.

    A finished episode frees its slot for the next task at once; `on_done` sees each episode as it ends
    (to save it, so an interrupted run can resume). Episodes come back in the order of `tasks`.
    """
    queue = list(reversed(tasks))
    active: list[tuple[Episode, Environment, float]] = []
    done: dict[int, Episode] = {}
    order = {id(t): i for i, t in enumerate(tasks)}
    try:
        while queue or active:
            while queue and len(active) < batch_size:
                task = queue.pop()
                active.append((Episode(task), Environment(task, limits, seed), time.perf_counter()))
            actions = policy.act_batch([e.task for e, _, _ in active], [e.steps for e, _, _ in active])
            still = []
            for (episode, env, started), action in zip(active, actions):
                take_action(env, episode, action)
                if len(episode.steps) >= max_steps or env.done or episode.error:
                    done[order[id(episode.task)]] = finish_episode(env, episode, max_steps, started)
                    if on_done is not None:
                        on_done(episode)
                else:
                    still.append((episode, env, started))
            active = still
    finally:
        for _, env, _ in active:
            env.close()
    return [done[i] for i in sorted(done)]


def replay(task: Task, actions: Sequence[str], limits: Limits = Limits(), seed: int = 0) -> Environment:
    """A fresh environment brought to the state after `actions`: how a step's world is restored."""
    env = Environment(task, limits, seed)
    for code in actions:
        env.execute(code)
    return env
