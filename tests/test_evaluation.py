"""Evaluation journals: resuming after a kill, a torn last line, an edited task."""
import json
import logging

import pytest

from helpers.agent.expert import ExpertPolicy
from helpers.harness.evaluate import evaluate, read_journal
from helpers.tasks import build_split


class CountingExpert(ExpertPolicy):
    """The expert, counting the episodes it is asked to play (one first action each)."""

    def __init__(self):
        self.started = []

    def act(self, task, history):
        if not history:
            self.started.append(task.id)
        return super().act(task, history)


@pytest.fixture(scope="module")
def tasks():
    return build_split("dev", 1)[:4]


def test_a_torn_last_line_is_dropped_with_a_warning_and_its_task_runs_again(tmp_path, tasks, caplog):
    journal = tmp_path / "expert_dev_episodes.jsonl"
    evaluate(tasks[:3], ExpertPolicy(), "dev", resume_from=journal, progress=False)
    lines = journal.read_text().splitlines()
    # what a kill in the middle of an append leaves: the third record cut short, no final newline
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])

    policy = CountingExpert()
    with caplog.at_level(logging.WARNING, logger="helpers.harness.evaluate"):
        evaluation = evaluate(tasks, policy, "dev", resume_from=journal, progress=False)
    assert policy.started == [tasks[2].id, tasks[3].id]  # the torn one and the new one; not the two whole ones
    assert [r["task_id"] for r in evaluation.records] == [t.id for t in tasks]
    assert all(r["success"] for r in evaluation.records)
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING and "line 3 is not a whole record" in warning.getMessage()
    # the journal was repaired: every line is a whole record, one per task
    assert [json.loads(line)["task_id"] for line in journal.read_text().splitlines()] == [t.id for t in tasks]


def test_a_last_record_without_its_newline_is_kept_and_the_next_append_starts_a_new_line(tmp_path, tasks, caplog):
    journal = tmp_path / "j.jsonl"
    evaluate(tasks[:1], ExpertPolicy(), "dev", resume_from=journal, progress=False)
    journal.write_text(journal.read_text().rstrip("\n"))
    policy = CountingExpert()
    evaluate(tasks[:2], policy, "dev", resume_from=journal, progress=False)
    assert policy.started == [tasks[1].id] and not caplog.records
    assert len(read_journal(journal)) == 2 and len(journal.read_text().splitlines()) == 2


def test_an_edited_task_runs_again_and_the_others_resume(tmp_path, tasks):
    journal = tmp_path / "j.jsonl"
    evaluate(tasks, ExpertPolicy(), "dev", resume_from=journal, progress=False)
    edited = tasks[1].model_copy(update={"instruction": tasks[1].instruction + " Thanks."})
    policy = CountingExpert()
    evaluation = evaluate([tasks[0], edited, *tasks[2:]], policy, "dev", resume_from=journal, progress=False)
    assert policy.started == [tasks[1].id] and len(evaluation.records) == len(tasks)


def test_a_journal_of_unreadable_bytes_is_dropped_line_by_line_not_a_crash(tmp_path, tasks, caplog):
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(b'{"task_id": "x", "success": tr\xc3\n[1, 2]\n\xff\xfe\n')
    evaluation = evaluate(tasks[:1], ExpertPolicy(), "dev", resume_from=journal, progress=False)
    assert evaluation.records[0]["success"] and "lines 1, 2, 3 are not whole records" in caplog.records[0].getMessage()


class BatchRecordingExpert(CountingExpert):
    """The expert, remembering which tasks shared each generation round."""

    def __init__(self):
        super().__init__()
        self.rounds = []

    def act_batch(self, tasks, histories):
        self.rounds.append({t.id for t in tasks})
        return super().act_batch(tasks, histories)


def test_several_splits_share_the_rounds_and_keep_their_own_journals(tmp_path, tasks):
    from helpers.harness.evaluate import evaluate_splits

    other = build_split("test_challenge", 1)[:2]  # fewer episodes than dev runs, so the time share shows
    journals = {"dev": tmp_path / "dev.jsonl", "test_challenge": tmp_path / "challenge.jsonl"}
    evaluate(tasks[:1], ExpertPolicy(), "dev", resume_from=journals["dev"], progress=False)  # one already done

    policy = BatchRecordingExpert()
    both = evaluate_splits({"dev": tasks, "test_challenge": other}, policy, batch_size=8, progress=False,
                           resume_from=journals)
    assert policy.started == [t.id for t in tasks[1:] + other]  # the journaled episode is not played again
    assert any(r & {t.id for t in tasks} and r & {t.id for t in other} for r in policy.rounds)  # one run, mixed rounds
    for split, split_tasks in (("dev", tasks), ("test_challenge", other)):
        evaluation = both[split]
        assert [r["task_id"] for r in evaluation.records] == [t.id for t in split_tasks]
        assert {r["split"] for r in evaluation.records} == {split}
        assert evaluation.summary["tgc"] == 100.0
        assert [json.loads(line)["task_id"] for line in journals[split].read_text().splitlines()] == [
            t.id for t in split_tasks]
    assert len(both["dev"].episodes) == 3 and len(both["test_challenge"].episodes) == 2
    # the run's time is shared by episodes: both splits report the rate of the whole run
    assert both["dev"].summary["episodes_per_s"] == both["test_challenge"].summary["episodes_per_s"]
