"""GRPO rewards: one float per completion, each run in its own restored world, no reward for hacks."""
import json

import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.agent.prompts import format_completion
from helpers.harness.episode import run_episode
from helpers.tasks import build_split
from helpers.rl.step_rewards import ExecutionRewards


@pytest.fixture(scope="module")
def send_task():
    return next(t for t in build_split("dev", 1) if t.scenario == "send_with_note")


@pytest.fixture(scope="module")
def expert_steps(send_task):
    return run_episode(send_task, ExpertPolicy()).steps


def _score(rewards, task, prior, completions):
    columns = {"completions": [[{"role": "assistant", "content": c}] for c in completions],
               "task_id": [task.id] * len(completions), "prior_actions": [prior] * len(completions)}
    return {f.__name__: f(**columns) for f in rewards.functions}


def test_each_reward_returns_one_float_per_completion(send_task, expert_steps):
    rewards = ExecutionRewards({send_task.id: send_task})
    prior = [s.action for s in expert_steps[:2]]
    completions = [format_completion(expert_steps[2].thought, expert_steps[2].action), "not json", "{}"]
    for name, values in _score(rewards, send_task, prior, completions).items():
        assert len(values) == 3 and all(isinstance(v, float) for v in values), name


def test_the_expert_step_is_rewarded_and_errors_are_punished(send_task, expert_steps):
    rewards = ExecutionRewards({send_task.id: send_task})
    send_index = next(i for i, s in enumerate(expert_steps) if "send_money(" in s.action)
    prior = [s.action for s in expert_steps[:send_index]]
    right = format_completion(expert_steps[send_index].thought, expert_steps[send_index].action)
    broken = format_completion("oops", "apis.wallet.send_mony()")
    wrong_amount = right.replace("amount=", "amount=1")
    scores = _score(rewards, send_task, prior, [right, broken, wrong_amount])
    assert scores["format_reward"] == [0.5, 0.5, 0.5]
    assert scores["execution_reward"] == [1.0, -1.0, 1.0]
    assert scores["goal_reward"][0] == 0.5 and scores["goal_reward"][2] == -2.0  # collateral: the wrong payment


def test_completions_never_share_a_world(send_task, expert_steps):
    # the same payment sent by two completions of one group: each sees its own fresh world, so both earn it
    rewards = ExecutionRewards({send_task.id: send_task})
    send_index = next(i for i, s in enumerate(expert_steps) if "send_money(" in s.action)
    prior = [s.action for s in expert_steps[:send_index]]
    right = format_completion("pay", expert_steps[send_index].action)
    again = format_completion("pay again", expert_steps[send_index].action + "\nx = 1")
    assert _score(rewards, send_task, prior, [right, again])["goal_reward"] == [0.5, 0.5]


def test_finishing_the_task_right_earns_the_goal(send_task, expert_steps):
    rewards = ExecutionRewards({send_task.id: send_task})
    prior = [s.action for s in expert_steps[:-1]]
    final = format_completion(expert_steps[-1].thought, expert_steps[-1].action)
    assert _score(rewards, send_task, prior, [final])["goal_reward"] == [2.0]


@pytest.mark.parametrize("hack", [
    format_completion("nothing to do", ""),
    format_completion("done", "apis.supervisor.complete_task()"),
    format_completion("trust me", 'print("Execution successful.")'),
    json.dumps({"thought": "done", "action": "   "}),
    "Execution successful.",
])
def test_reward_hacks_earn_nothing_positive(send_task, expert_steps, hack):
    rewards = ExecutionRewards({send_task.id: send_task})
    for cut in (0, 2):  # at the start, and after logging in
        prior = [s.action for s in expert_steps[:cut]]
        total = sum(values[0] for values in _score(rewards, send_task, prior, [hack]).values())
        assert total <= 0, (hack, cut, total)
