"""Fuzzing the boundaries a user or a model controls: task files, model replies, and one evaluation step.

Seeded, so a failure reproduces. Each case must end in a clear error (TaskFileError, one line naming the
line) or in a graded episode; anything else (a crash, a traceback, a hang) fails the test.
"""
import copy
import json
import random

import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.agent.policy import reply_to_action
from helpers.agent.prompts import ActionParseError, ParsedAction, parse_action
from helpers.harness.evaluate import evaluate, save_evaluation
from helpers.paths import DATA_DIR
from helpers.sandbox import Limits
from helpers.tasks import TaskFileError, build_split, load_tasks

SEED = 15
TASK_CASES = 300
REPLY_CASES = 300
# short limits: a fuzzed reply may loop forever, and the test must stay fast
LIMITS = Limits(step_wall_seconds=0.5, step_cpu_seconds=0.5)

ODD_VALUES = [
    None, True, False, 0, -1, 10**30, 1e308, float("nan"), float("inf"), -0.0, "", " ", "25", "true", "null",
    "2026-03-14T10:00:00Z", "2026-13-45", "\ud800", "😀" * 3, "x" * 5000, "a_b_1", "Bob Ray", "bob.ray@example.com",
    [], {}, [None], {"type": "status"}, [[[[[]]]]], {"a": {"b": {"c": {}}}}, "<|im_end|>", "'; DROP TABLE --",
]


def _seed_records() -> list[dict]:
    """Valid tasks to start from: the documented example task and one task of every generated scenario type."""
    records = [json.loads((DATA_DIR / "examples" / "example_task.jsonl").read_text())]
    for split in ("train", "test_challenge"):
        seen = set()
        for task in build_split(split, 1):
            if task.scenario not in seen:
                seen.add(task.scenario)
                records.append(json.loads(task.model_dump_json()))
    return records


def _paths(value, prefix=()):
    """Every (container, key) pair inside a JSON value, to mutate one in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield value, key
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield value, index
            yield from _paths(item, prefix + (index,))


def _mutate(record: dict, rng: random.Random) -> dict:
    record = copy.deepcopy(record)
    # the world is most of a task: without a focus, the slots and checks would rarely be hit
    focus = rng.choice([None, "slots", "checks"])
    for _ in range(rng.randint(1, 3)):
        places = list(_paths(record[focus] if focus in record and record[focus] else record))
        container, key = rng.choice(places)
        action = rng.random()
        if action < 0.45:
            container[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.6 and isinstance(container, dict):
            del container[key]
        elif action < 0.7 and isinstance(container, dict):
            container[key + rng.choice(["_", "s", "x"])] = container.pop(key)  # a misspelt field
        elif action < 0.8 and isinstance(container, dict):
            container[rng.choice(["colour", "approved", "type", "slots", "id"])] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.9 and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))  # a duplicated record (ids repeat)
        elif isinstance(container[key], (int, float)) and not isinstance(container[key], bool):
            container[key] = rng.choice([container[key] * -1, container[key] + 1, str(container[key])])
    return record


def _line(record: dict, rng: random.Random) -> bytes:
    """The record as a JSONL line, sometimes damaged the way files get damaged."""
    data = json.dumps(record, ensure_ascii=rng.random() < 0.5).encode("utf-8", errors="surrogatepass")
    damage = rng.random()
    if damage < 0.1:
        data = data[: rng.randrange(len(data))]  # torn
    elif damage < 0.15:
        cut = rng.randrange(len(data))
        data = data[:cut] + bytes([rng.randrange(128, 256)]) + data[cut:]  # not UTF-8
    elif damage < 0.2:
        data = b"[" * rng.randint(1, 3000) + data
    return data


@pytest.fixture(scope="module")
def fuzzed_tasks(tmp_path_factory):
    """Load every fuzzed task file; return the tasks that loaded (the rest must have failed cleanly)."""
    rng = random.Random(SEED)
    records = _seed_records()
    folder = tmp_path_factory.mktemp("fuzz")
    loaded, refused, crashes = [], 0, {}
    for case in range(TASK_CASES):
        path = folder / f"case{case}.jsonl"
        lines = [_line(_mutate(rng.choice(records), rng), rng) for _ in range(rng.randint(1, 2))]
        path.write_bytes(b"\n".join(lines) + b"\n")
        try:
            loaded.extend(load_tasks(path))
        except TaskFileError as error:
            message = str(error)
            if "\n" in message or str(path) not in message or not ("line " in message or "holds no tasks" in message):
                crashes.setdefault("unclear message", path.name + ": " + message)
            refused += 1
        except Exception as error:  # a crash: keep one example of each kind for the report
            crashes.setdefault(type(error).__name__, f"{path.name}: {error}"[:300])
    return loaded, refused, crashes


def test_malformed_task_files_are_refused_in_one_sentence_or_loaded(fuzzed_tasks):
    loaded, refused, crashes = fuzzed_tasks
    assert not crashes, crashes
    # the mutations must exercise both outcomes, or this test proves little
    assert refused > TASK_CASES // 2 and len(loaded) > 10


def test_the_expert_plays_or_gives_up_on_every_task_that_loads(fuzzed_tasks, tmp_path):
    loaded, _, _ = fuzzed_tasks
    # fuzzed copies of one seed task share its id: number them apart so that every one is played
    tasks = [task.model_copy(update={"id": f"{task.scenario_id}_{number}"}) for number, task in enumerate(loaded)]
    evaluation = evaluate(tasks, ExpertPolicy(), "fuzz", limits=LIMITS, max_steps=12, progress=False)
    assert len(evaluation.records) == len(tasks)
    for record in evaluation.records:
        assert isinstance(record["success"], bool) and 0 <= record["pass_pct"] <= 100
        assert "\n" not in record["error"]
    save_evaluation(evaluation, tmp_path, {})  # odd text (lone surrogates, emoji) must be writable


REPLY_PIECES = [
    '{"thought": "t", "action": "print(1)"}', "{", "}", "[", "]", '"', "'", "```json\n", "```python\n", "```",
    '"action"', '"thought"', ":", ",", "null", "true", "1e999", "NaN", "\\", "\\u0000", "\ud800", "\n", " ",
    "apis.wallet.show_balance(access_token=x)", "import os", "while True: pass", "1/0", "print('x' * 10**6)",
    "apis.supervisor.complete_task(answer=1)", "apis.supervisor.complete_task(status='fail')", "def f(:", "{{", "}}",
    "<|im_end|>", "😀", "apis.api_docs.show_app_descriptions()", "__import__('os')", "x = [1] * 10**9",
]


def _reply(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:  # well-formed JSON around odd code
        code = "".join(rng.choice(REPLY_PIECES) for _ in range(rng.randint(0, 4)))
        thought = rng.choice(ODD_VALUES)
        obj = {"thought": thought, "action": code} if rng.random() < 0.8 else {"action": rng.choice(ODD_VALUES)}
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        return rng.choice(["", "Sure!\n", "```json\n"]) + text + rng.choice(["", "\n```", " thanks"])
    if kind < 0.5:
        return "{" * rng.randint(1, 5000) + "}" * rng.randint(0, 5000)
    return "".join(rng.choice(REPLY_PIECES) for _ in range(rng.randint(0, 12)))


def test_random_replies_parse_or_fail_to_parse_and_one_step_is_graded(tmp_path):
    rng = random.Random(SEED)
    replies = [_reply(rng) for _ in range(REPLY_CASES)]
    crashes = {}
    for reply in replies:
        try:
            parsed = parse_action(reply)
            assert isinstance(parsed, ParsedAction) and isinstance(parsed.code, str) and parsed.code.strip()
            action = reply_to_action(reply)
            assert action.code == parsed.code and not action.parse_error
        except ActionParseError as error:
            assert str(error) and "\n" not in str(error)
            assert reply_to_action(reply).parse_error
        except Exception as error:
            crashes.setdefault(type(error).__name__, f"{reply[:80]!r}: {error}"[:300])
    assert not crashes, crashes

    example = load_tasks(DATA_DIR / "examples" / "example_task.jsonl")[0]
    tasks = [example.model_copy(update={"id": f"{example.scenario_id}_{i}"}) for i in range(len(replies))]
    by_id = {task.id: reply for task, reply in zip(tasks, replies)}

    class Replaying:
        """A model that answers each task's first step with its fuzzed reply."""

        name = "fuzz"

        def act(self, task, history):
            return reply_to_action(by_id[task.id])

        def act_batch(self, tasks, histories):
            return [self.act(task, history) for task, history in zip(tasks, histories)]

    evaluation = evaluate(tasks, Replaying(), "fuzz", limits=LIMITS, max_steps=1, batch_size=64, progress=False)
    assert len(evaluation.records) == len(replies)
    kinds = set()
    for record in evaluation.records:
        (step,) = record["trajectory"]
        assert isinstance(step["ok"], bool) and (step["ok"] or step["error_kind"])
        kinds.add(step["error_kind"])
        assert isinstance(record["success"], bool)
    # the replies reach the parser's refusal, the sandbox's refusals and errors, and steps that run
    assert {"parse_error", "refused", None} <= kinds and len(kinds) >= 5, kinds
    save_evaluation(evaluation, tmp_path, {})
