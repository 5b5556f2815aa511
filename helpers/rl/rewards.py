"""Episode rewards for GRPO: each a function of a rollout's graded outcome, so TRL logs each on its own.

| reward | per rollout |
|---|---|
| `success_reward` | 1 when every check of the task passes |
| `progress_reward` | the share of the task's own checks that pass (the payment made, the answer given, ...) |
| `collateral_reward` | -1 when the world changed in a way no check asks for |
| `step_reward` | the capstone's rule summed over the episode: +1 per step whose code runs and calls an app, -1 per step whose code fails (or reply that holds no code; in a chat, a reply that is neither an action nor a well-formed question), 0 for code that runs without touching an app |
| `needless_question_reward` | -1 for a chat whose opening held every detail and the model asked for one anyway |

The weights (`RewardWeights`, set in the profile) make finishing the task worth more than any number of
busy steps: calling APIs in a loop until the step limit earns at most `max_steps x steps`, less than a
success. Collateral damage weighs less than two steps: at collateral 2 a policy learned to make its payment
step fail on purpose, since a crash (-1 step) cost less than a wrong payment (-2); code that fails must never
pay better than code that runs (docs/results-cpu-smollm2.md, "Reinforcement learning"). A needless question
weighs nothing by default: success already pays for asking when a detail is missing; GRPO at learning rate
5e-5 spread needless asking (2-6 of 12 complete chats against the start model's 1; 1-2 at 2e-5), and the weight is
there to measure against that. Every reward reads the outcome's fields, never the trajectory's text.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence


@dataclass(frozen=True)
class RewardWeights:
    success: float = 4.0
    progress: float = 2.0
    collateral: float = 0.25  # under 2 x steps: a wrong payment that runs must beat one that crashes
    steps: float = 0.25
    # off by default: with one chat group a step needless asking stays rare (1-2 of 12 complete chats); at 1.0 it
    # undid the asking-in-every-chat that two chat groups a step taught at one seed (docs/benchmarks.md)
    needless_question: float = 0.0

    @classmethod
    def from_dict(cls, values: dict | None) -> "RewardWeights":
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown reward weight(s) {', '.join(sorted(unknown))}: "
                             f"choose among {', '.join(f.name for f in fields(cls))}.")
        return cls(**{k: float(v) for k, v in values.items()})

    def as_list(self) -> list[float]:
        """In the order of `OUTCOME_REWARDS` (collateral_reward and needless_question_reward are already negative)."""
        return [self.success, self.progress, self.collateral, self.steps, self.needless_question]

    def as_dict(self) -> dict:
        return asdict(self)


def _field(outcome, name):
    return outcome[name] if isinstance(outcome, dict) else getattr(outcome, name)


def success_reward(completions=None, outcome: Sequence = (), **kwargs) -> list[float]:
    """1 when every check of the task passes, else 0."""
    _log(outcome, kwargs)
    return [1.0 if _field(o, "success") else 0.0 for o in outcome]


def progress_reward(completions=None, outcome: Sequence = (), **kwargs) -> list[float]:
    """The share of the task's own checks that pass; "no other changes" and "completed" are not counted."""
    return [_field(o, "goal_passed") / _field(o, "goal_checks") if _field(o, "goal_checks") else 0.0
            for o in outcome]


def collateral_reward(completions=None, outcome: Sequence = (), **kwargs) -> list[float]:
    """-1 when the world changed in a way no check of the task asks for."""
    return [-1.0 if _field(o, "collateral") else 0.0 for o in outcome]


def step_reward(completions=None, outcome: Sequence = (), **kwargs) -> list[float]:
    """The capstone's per-step rule summed over the rollout: +1 per step that runs and calls an app, -1 per failure."""
    return [float(_field(o, "steps_api") - _field(o, "steps_failed")) for o in outcome]


def needless_question_reward(completions=None, outcome: Sequence = (), **kwargs) -> list[float]:
    """-1 for a chat whose opening held every detail and the model asked for one anyway; 0 otherwise."""
    return [-1.0 if _field(o, "kind") == "chat" and _field(o, "asked") and not _field(o, "missing") else 0.0
            for o in outcome]


OUTCOME_REWARDS = (success_reward, progress_reward, collateral_reward, step_reward, needless_question_reward)


def total_reward(outcomes: Sequence, weights: RewardWeights) -> list[float]:
    """The weighted sum GRPO normalises within each group (TRL's `sum_then_normalize`)."""
    columns = [f(outcome=outcomes) for f in OUTCOME_REWARDS]
    return [sum(w * c[i] for w, c in zip(weights.as_list(), columns)) for i in range(len(outcomes))]


def totals_differ(totals: Sequence[float]) -> bool:
    """Whether a group's rewards differ: a group whose rewards all agree has no advantage, so no gradient."""
    return max(totals) - min(totals) >= 1e-9


def _log(outcome: Sequence, kwargs: dict) -> None:
    """Batch figures worth a curve, logged once per batch beside TRL's own metrics."""
    log_metric = kwargs.get("log_metric")
    if log_metric is None or not outcome:
        return
    log_metric("episode/turns", sum(_field(o, "turns") for o in outcome) / len(outcome))
    log_metric("episode/completed", sum(bool(_field(o, "completed")) for o in outcome) / len(outcome))
    for name, lacking in (("asked_when_detail_missing", True), ("asked_when_nothing_missing", False)):
        chats = [o for o in outcome if _field(o, "kind") == "chat" and bool(_field(o, "missing")) == lacking]
        if chats:
            log_metric(f"chat/{name}", sum(bool(_field(o, "asked")) for o in chats) / len(chats))
    stats = (kwargs.get("rollout_stats") or [None])[0]
    for name, value in (stats or {}).items():
        log_metric(f"rollouts/{name}", value)
