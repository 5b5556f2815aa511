"""Split-level scores: task goal completion (TGC), scenario goal completion (SGC), by difficulty."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Protocol


class Scored(Protocol):
    scenario_id: str
    difficulty: int
    success: bool
    pass_pct: float


def task_goal_completion(results: Iterable[Scored]) -> float:
    """Percent of tasks whose every check passed."""
    results = list(results)
    return 100.0 * sum(r.success for r in results) / len(results) if results else 0.0


def scenario_goal_completion(results: Iterable[Scored]) -> float:
    """Percent of scenarios whose every variant succeeded."""
    by_scenario: dict[str, bool] = defaultdict(lambda: True)
    for r in results:
        by_scenario[r.scenario_id] &= bool(r.success)
    return 100.0 * sum(by_scenario.values()) / len(by_scenario) if by_scenario else 0.0


def summarize(results: Iterable[Scored]) -> dict:
    """TGC, SGC and mean pass % over all results and per difficulty level."""
    results = list(results)
    summary = _scores(results)
    levels = sorted({r.difficulty for r in results})
    summary["by_difficulty"] = {level: _scores([r for r in results if r.difficulty == level]) for level in levels}
    return summary


def _scores(results: list) -> dict:
    return {
        "tasks": len(results),
        "scenarios": len({r.scenario_id for r in results}),
        "tgc": task_goal_completion(results),
        "sgc": scenario_goal_completion(results),
        "mean_pass_pct": sum(r.pass_pct for r in results) / len(results) if results else 0.0,
    }
