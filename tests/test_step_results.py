"""Execution results are data: a step that prints and then fails is a failure for every consumer.

The sandbox puts printed output before the error report, so an observation can start with perfectly
good output and still come from a failed step; rewards, data filters and metrics must read the
StepResult's fields, never the text.
"""
import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.agent.prompts import format_completion
from helpers.data.preferences import why_rejected
from helpers.data.stepwise import UnverifiedStep, stepwise_records
from helpers.evaluation.step_metrics import EXACT, WRONG, step_scores
from helpers.harness.episode import Environment, Step, replay, run_episode
from helpers.sandbox import Limits, Sandbox
from helpers.sandbox.result import ErrorKind
from helpers.tasks import build_split
from helpers.rl.step_rewards import ExecutionRewards, run_completion

LIMITS = Limits(step_wall_seconds=1.0, step_cpu_seconds=1.0, memory_mb=256)
PRINT_BALANCE = "print(apis.wallet.show_balance(access_token=wallet_token))\n"
# the same good first line, then three ways to fail
FAILING_ENDINGS = {
    ErrorKind.EXCEPTION: "1 / 0",
    ErrorKind.TIME_LIMIT: "while True:\n    pass",
    ErrorKind.MEMORY_LIMIT: "hog = []\nwhile True:\n    hog.append('x' * 10**6)",
}


@pytest.fixture(scope="module")
def task():
    return next(t for t in build_split("train", 1) if t.scenario == "send_by_name")


@pytest.fixture(scope="module")
def expert_actions(task):
    return [s.action for s in run_episode(task, ExpertPolicy()).steps]


@pytest.fixture
def logged_in(task, expert_actions):
    """An environment after the expert's documentation and login steps (wallet_token is defined)."""
    with replay(task, expert_actions[:2], LIMITS) as env:
        yield env


@pytest.mark.parametrize("kind", list(FAILING_ENDINGS), ids=str)
def test_print_then_fail_is_a_failed_step_with_its_output(logged_in, kind):
    result = logged_in.execute(PRINT_BALANCE + FAILING_ENDINGS[kind])
    assert not result.ok and result.error_kind == kind
    assert result.output.startswith('{"balance": ') and result.observation.startswith('{"balance": ')
    assert result.error_message and result.error_message in result.observation
    assert [(c.app, c.api, c.ok) for c in result.api_calls] == [("wallet", "show_balance", True)]


def test_a_successful_step_records_its_calls(logged_in):
    result = logged_in.execute(PRINT_BALANCE + "apis.wallet.show_balance(access_token='wrong')\n")
    assert not result.ok and result.error_kind == ErrorKind.API_ERROR
    assert [c.ok for c in result.api_calls] == [True, False]
    ok = logged_in.execute(PRINT_BALANCE)
    assert ok.ok and ok.error_kind is None and ok.error_message == "" and ok.successful_api_calls == 1


@pytest.mark.parametrize("kind", list(FAILING_ENDINGS), ids=str)
def test_print_then_fail_earns_the_failure_reward(task, expert_actions, kind):
    text = format_completion("I check my balance.", PRINT_BALANCE + FAILING_ENDINGS[kind])
    outcome = run_completion(task, expert_actions[:2], text)
    assert outcome.parsed and outcome.errored
    rewards = ExecutionRewards({task.id: task}, workers=1)
    assert rewards.execution_reward([text], [task.id], [expert_actions[:2]]) == [-1.0]


def test_print_then_fail_is_kept_out_of_the_training_data(task, expert_actions):
    episode = run_episode(task, ExpertPolicy())
    assert len(list(stepwise_records([episode], "train"))) == len(episode.steps)
    with replay(task, expert_actions[:2], LIMITS) as env:
        failed = env.execute(PRINT_BALANCE + FAILING_ENDINGS[ErrorKind.TIME_LIMIT])
    episode.steps[2] = Step.from_result("I check my balance.", PRINT_BALANCE + "while True:\n    pass", failed)
    with pytest.raises(UnverifiedStep, match="time_limit"):
        list(stepwise_records([episode], "train"))


def test_print_then_fail_is_a_rejected_preference(task, expert_actions):
    reason = why_rejected(task, expert_actions[:2], format_completion("", PRINT_BALANCE + "1 / 0"))
    assert reason is not None and reason.startswith("code fails (exception)")


def test_print_then_fail_scores_zero_as_a_next_step(task, expert_actions):
    records = list(stepwise_records([run_episode(task, ExpertPolicy())], "train"))
    third = records[2]
    replies = [third["completion"][0]["content"], format_completion("", PRINT_BALANCE + "1 / 0")]
    scores = step_scores([third, third], replies, {task.id: task})
    assert list(scores["score"]) == [EXACT, WRONG]
    assert "execution error" in scores["reason"][1]


def test_after_a_memory_error_the_namespace_lets_the_giant_object_go():
    with Sandbox(lambda *call: {}, limits=LIMITS) as box:
        assert box.execute("keep = 'small'\nhog = []").ok
        hit = box.execute("while True:\n    hog.append('x' * 10**6)")
        assert hit.error_kind == ErrorKind.MEMORY_LIMIT and "hog" in hit.observation
        assert "keep" not in hit.observation.split("removed:")[-1]
        after = box.execute("room = 'y' * (100 * 10**6)\nprint(len(room), keep)")
        assert after.ok and after.observation == "100000000 small"
        assert box.execute("print(hog)").error_kind == ErrorKind.EXCEPTION


def test_a_non_encodable_string_is_named_as_such():
    with Sandbox(lambda *call: {}, limits=LIMITS) as box:
        result = box.execute("x = '\ud800'")
    assert result.error_kind == ErrorKind.REFUSED
    assert "cannot be encoded as UTF-8" in result.observation and "nested" not in result.observation


def test_refusals_syntax_errors_and_ended_episodes_have_their_kinds():
    with Sandbox(lambda *call: {}, limits=LIMITS) as box:
        assert box.execute("import os").error_kind == ErrorKind.REFUSED
        assert box.execute("def f(:\n  pass").error_kind == ErrorKind.SYNTAX
        nested = box.execute("-" * 19_000 + "1")
        assert nested.error_kind == ErrorKind.REFUSED and "too deeply nested" in nested.observation
        box.close()
        ended = box.execute("print(1)")
    assert ended.error_kind == ErrorKind.EPISODE_ENDED and ended.episode_ended


def test_an_unparseable_reply_is_a_failed_step(task):
    class Rambler:
        name = "rambler"

        def act(self, task, history):
            return self.act_batch([task], [history])[0]

        def act_batch(self, tasks, histories):
            from helpers.agent.policy import reply_to_action
            return [reply_to_action("I would like to help.") for _ in tasks]

    episode = run_episode(task, Rambler(), max_steps=2)
    assert [(s.ok, s.error_kind) for s in episode.steps] == [(False, "parse_error")] * 2
    # a rambler does not use up the whole step budget: three unusable replies in a row end its episode
    episode = run_episode(task, Rambler(), max_steps=10)
    assert len(episode.steps) == 3 and episode.error == "3 replies in a row held no usable action"
    assert not episode.result.success


def test_environment_steps_carry_the_result(task):
    with Environment(task, LIMITS) as env:
        result = env.execute("print('hi')\nraise ValueError('no')")
    step = Step.from_result("", "...", result)
    assert (step.ok, step.error_kind, step.observation) == (False, "exception", result.observation)
