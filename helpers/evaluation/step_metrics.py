"""Scoring single steps: does a model's next action on a recorded prompt match the expert's, or do as well?"""
from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from helpers.agent.expert import ExpertPolicy
from helpers.agent.prompts import ActionParseError, instruction_of, parse_action
from helpers.harness.episode import Environment, Step, replay
from helpers.sandbox.result import StepResult
from helpers.tasks.grading import answers_match, world_changes
from helpers.tasks.schema import Task

if TYPE_CHECKING:
    from helpers.agent.llm_client import ChatClient

EXACT, EQUIVALENT, WRONG = 1.0, 0.5, 0.0
MATCH_COLUMNS = ["task_id", "scenario", "step", "copies", "parsed", "match", "expected", "predicted", "reply"]


def normalize_code(code: str) -> str:
    """Code compared modulo trailing spaces and blank lines; the JSON around it is already parsed away."""
    lines = [line.rstrip() for line in code.strip().splitlines()]
    return "\n".join(line for line in lines if line)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def copied_values(code: str, instruction: str) -> list[str]:
    """Values in the code that the instruction states: names, phone numbers, notes, amounts, card digits.

    Writing such a step means copying from the instruction; every other step of a task type is the same
    code whatever the instruction says. Strings that are plain lowercase identifiers ("wallet",
    "pending") are vocabulary, not copies; numbers count when the instruction states the same value.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    indices = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    stated = {float(n) for n in _NUMBER.findall(instruction)}
    copied = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in indices or isinstance(node.value, bool):
            continue
        value = node.value
        if isinstance(value, str) and value in instruction and not (value.isidentifier() and value.islower()):
            copied.append(value)
        elif isinstance(value, (int, float)) and value and float(value) in stated:
            copied.append(str(value))
    return copied


def spread_sample(records: list[dict], limit: int) -> list[dict]:
    """Whole tasks' step records, taken in turn from every scenario type, until at least `limit` records (0: all).

    The first records of a file are the first tasks, often of one or two scenario types; a quick score
    on a few dozen steps should see every type, and each task's steps in order.
    """
    if not limit or limit >= len(records):
        return list(records)
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(record["task_id"], []).append(record)
    by_scenario: dict[str, list[str]] = {}
    for task_id, steps in by_task.items():
        by_scenario.setdefault(steps[0]["scenario"], []).append(task_id)
    chosen: list[dict] = []
    for round_ in range(max(len(ids) for ids in by_scenario.values())):
        for task_ids in by_scenario.values():
            if round_ < len(task_ids) and len(chosen) < limit:
                chosen.extend(by_task[task_ids[round_]])
    return chosen


def action_matches(records: list[dict], replies: list[str]) -> pd.DataFrame:
    """One row per step record: the expert's action, the model's reply, whether it parsed and matched.

    `copies` says whether the expert's action holds a value copied from the instruction (`copied_values`).
    """
    rows = []
    for record, reply in zip(records, replies):
        expected = parse_action(record["completion"][0]["content"]).code
        try:
            predicted, parsed = parse_action(reply).code, True
        except ActionParseError:
            predicted, parsed = "", False
        rows.append({"task_id": record["task_id"], "scenario": record["scenario"], "step": record["step"],
                     "copies": bool(copied_values(expected, instruction_of(record["prompt"]))),
                     "parsed": parsed, "match": parsed and normalize_code(predicted) == normalize_code(expected),
                     "expected": expected, "predicted": predicted, "reply": reply})
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def match_by_kind(scores: pd.DataFrame) -> pd.DataFrame:
    """Action match % of the steps that copy a value from the instruction and of the others (with counts)."""
    kind = scores["copies"].map({True: "copies a value from the instruction", False: "no value to copy"})
    table = scores.groupby(kind)["match"].agg(steps="size", match_pct="mean")
    table["match_pct"] = (100 * table["match_pct"]).round(1)
    return table.rename_axis("dev step")


def step_scores(records: list[dict], replies: list[str], tasks: dict[str, Task],
                judge: StepJudge | None = None) -> pd.DataFrame:
    """The columns of `action_matches` plus `score` (1, 0.5 or 0) and `reason` (which rule gave it).

    - 1.0: the predicted action is the expert's (modulo `normalize_code`);
    - 0.5: it differs, but run in the sandbox in that step's state (the expert's earlier steps replayed)
      it raises no error and leaves the world as the expert's action does: the same changes since the
      task's initial world (as a multiset of `Change.describe()`) and the same completion (answer
      normalised, and status; or neither completed). This judges the world state only: at a step where
      the expert changes nothing (reading docs, logging in, listing contacts), any action that runs and
      changes nothing either, even a wrong or useless one, scores 0.5 too;
    - 0.0: the reply does not parse, the action fails, or the world ends up different.

    With a `judge`, each differing action that execution did not already rate 0.5 (unparseable replies
    excepted: there is no action to judge) gets 0.5 if the judge calls it a reasonable alternative;
    all of them go to the judge as one batch.

    `tasks` maps task ids to tasks. The earlier steps come from the records of the same task, or, where
    some are missing, from running the expert on the task, once per task.
    """
    if len(records) != len(replies):
        raise ValueError(f"Got {len(records)} records but {len(replies)} replies: give one reply per record.")
    table = action_matches(records, replies)
    references = _References(records, tasks)
    scores, reasons = [], []
    for record, row in zip(records, table.itertuples(index=False)):
        if not row.parsed:
            scores.append(WRONG)
            reasons.append(f"unparseable reply: {_parse_error(row.reply)}")
        elif row.match:
            scores.append(EXACT)
            reasons.append("exact match")
        else:
            difference = references.difference(record["task_id"], record["step"], row.predicted)
            scores.append(WRONG if difference else EQUIVALENT)
            reasons.append(difference or "equivalent: same world changes and completion as the expert's action")
    if judge is not None:
        _ask_judge(judge, records, table, scores, reasons)
    return table.assign(score=scores, reason=reasons)


def _ask_judge(judge: StepJudge, records: list[dict], table: pd.DataFrame, scores: list[float],
               reasons: list[str]) -> None:
    """Let the judge lift to 0.5 the parsed, differing actions that execution rated 0."""
    candidates = [i for i, row in enumerate(table.itertuples(index=False))
                  if row.parsed and not row.match and scores[i] == WRONG]
    items = [(_prompt_text(records[i]), table.at[i, "expected"], table.at[i, "predicted"]) for i in candidates]
    for index, reasonable in zip(candidates, judge.reasonable(items), strict=True):
        if reasonable:
            scores[index] = EQUIVALENT
            reasons[index] = f"judge: a reasonable alternative (execution: {reasons[index]})"
        else:
            reasons[index] = f"{reasons[index]}; judge: not reasonable"


def _prompt_text(record: dict) -> str:
    # The system preamble is the same for every step; the judge needs the instruction and history.
    return "\n\n".join(m["content"] for m in record["prompt"] if m["role"] != "system")


def _parse_error(reply: str) -> str:
    try:
        parse_action(reply)
    except ActionParseError as error:
        return str(error)
    return ""


@dataclass(frozen=True)
class _Outcome:
    """The world right after one action, reduced to what equivalence compares."""

    failure: str  # the error observation; empty when the action ran
    changes: Counter  # Change.describe() of every change since the task's initial world
    completion: dict | None


def _outcome(env: Environment, result: StepResult) -> _Outcome:
    failed = not result.ok or not env.sandbox.alive
    changes = Counter(change.describe() for change in world_changes(env.task.world, env.world.state))
    completion = dict(env.world.completion) if env.world.completion is not None else None
    return _Outcome(result.observation if failed else "", changes, completion)


def _same_completion(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return a["status"] == b["status"] and answers_match(a.get("answer"), b.get("answer"))


def _difference(expected: _Outcome, predicted: _Outcome) -> str:
    """Why the predicted outcome is not the expert's; empty when they are equivalent."""
    if predicted.failure:
        return f"execution error: {_last_line(predicted.failure)}"
    if predicted.changes != expected.changes:
        extra, missing = predicted.changes - expected.changes, expected.changes - predicted.changes
        return (f"different world changes: the model's action made {sorted(extra.elements()) or 'none'}, "
                f"the expert's made {sorted(missing.elements()) or 'none'}")
    if not _same_completion(expected.completion, predicted.completion):
        return f"different completion: the model's {predicted.completion}, the expert's {expected.completion}"
    return ""


def _last_line(observation: str) -> str:
    # A traceback's last line names the error; the rest is context the reason column does not need.
    lines = [line for line in observation.strip().splitlines() if line.strip()]
    return lines[-1] if lines else observation


@dataclass
class _Reference:
    actions: list[str]  # the expert's code for steps 0..n of one task
    outcomes: list[_Outcome]  # the world after each of them, run in order


class _References:
    """The expert's trajectory of each task, built on first use: from the records, gaps filled by the expert."""

    def __init__(self, records: list[dict], tasks: dict[str, Task]):
        self.tasks = tasks
        self.known: dict[str, dict[int, str]] = {}
        for record in records:
            code = parse_action(record["completion"][0]["content"]).code
            steps = self.known.setdefault(record["task_id"], {})
            if steps.setdefault(record["step"], code) != code:
                raise ValueError(f"{record['task_id']} step {record['step']}: two records give different "
                                 "expert actions; score the records of one trajectory per task.")
        self.cache: dict[str, _Reference] = {}

    def difference(self, task_id: str, step: int, predicted: str) -> str:
        """Run the predicted action in the step's state; why it is not equivalent, or empty if it is."""
        reference = self._reference(task_id)
        with replay(self.tasks[task_id], reference.actions[:step]) as env:
            outcome = _outcome(env, env.execute(predicted))
        return _difference(reference.outcomes[step], outcome)

    def _reference(self, task_id: str) -> _Reference:
        if task_id not in self.cache:
            if task_id not in self.tasks:
                raise ValueError(f"No task '{task_id}' among the {len(self.tasks)} tasks given: pass the tasks "
                                 "of the records' split, keyed by id.")
            self.cache[task_id] = self._build(self.tasks[task_id], self.known[task_id])
        return self.cache[task_id]

    @staticmethod
    def _build(task: Task, known: dict[int, str]) -> _Reference:
        last = max(known)
        has_gaps = len(known) < last + 1
        expert = ExpertPolicy()
        history: list[Step] = []
        outcomes: list[_Outcome] = []
        with Environment(task) as env:
            for step in range(last + 1):
                # With gaps the expert fills them in; it must then agree with every recorded step,
                # or the records come from another trajectory and the filled-in states would be wrong.
                expert_code = _expert_code(expert, task, history, step) if has_gaps else None
                code = known.get(step, expert_code)
                if expert_code is not None and normalize_code(expert_code) != normalize_code(code):
                    raise ValueError(f"{task.id} step {step}: the record's action differs from the expert's, and "
                                     "earlier steps are missing: pass every earlier step's record of this task.")
                result = env.execute(code)
                outcome = _outcome(env, result)
                if outcome.failure:
                    raise ValueError(f"{task.id} step {step}: the expert's action fails when replayed "
                                     f"({_last_line(outcome.failure)}): are these the records' tasks?")
                history.append(Step.from_result("", code, result))
                outcomes.append(outcome)
        return _Reference([s.action for s in history], outcomes)


def _expert_code(expert: ExpertPolicy, task: Task, history: list[Step], step: int) -> str:
    action = expert.act(task, history)
    if action.gave_up:
        raise ValueError(f"{task.id} step {step}: the expert cannot recover the missing steps: {action.gave_up}")
    return action.code


JUDGE_SYSTEM_PROMPT = (
    "You review one step of an AI agent that operates payment apps by writing Python. You see what the agent "
    "saw (the instruction and the history so far), the next action of an expert, and the agent's next action. "
    "Answer YES if the agent's action is a reasonable alternative to the expert's at this point: it makes the "
    "same progress, or equally valid progress, toward the instruction, with no side effect the instruction "
    "does not ask for. Otherwise answer NO. Answer with one word: YES or NO."
)

JUDGE_USER_TEMPLATE = """{prompt}

The expert's next action:
```python
{expert}
```

The agent's next action:
```python
{model}
```

Is the agent's action a reasonable alternative? Answer YES or NO."""

# The verdict is the reply's first word, after any markup or an "Answer:" label.
_VERDICT = re.compile(r"[\W_]*(?:answer[\W_]*)?(yes|no)\b", re.IGNORECASE)


def judge_says_yes(reply: str) -> bool:
    """True only for a reply that starts with YES (any case, markup allowed); NO and anything else are False."""
    match = _VERDICT.match(reply or "")
    return match is not None and match.group(1).lower() == "yes"


class StepJudge:
    """An LLM behind an OpenAI-compatible endpoint that says whether a differing action is still reasonable."""

    def __init__(self, client: ChatClient, max_tokens: int = 8):
        self.client = client
        self.max_tokens = max_tokens

    def reasonable(self, items: list[tuple[str, str, str]]) -> list[bool]:
        """For each (prompt text, expert action, model action): is the model's action reasonable? One batch."""
        if not items:
            return []
        chats = [[{"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                  {"role": "user", "content": JUDGE_USER_TEMPLATE.format(prompt=prompt, expert=expert, model=model)}]
                 for prompt, expert, model in items]
        replies = self.client.complete_many(chats, progress=False, desc="step judge", temperature=0.0,
                                            max_tokens=self.max_tokens)
        return [judge_says_yes(reply) for reply in replies]
