"""The failure analysis of 06, computed from evaluation journals written here by hand."""
import json

import pytest

from helpers.evaluation.failure_analysis import (best_trained_model, failure_examples, failure_report, load_episodes,
                                                 success_by_type)


def _record(task_id, scenario, model, success, first, parse_error=False, failed=(), error=""):
    step = {"thought": "" if parse_error else first, "action": first if parse_error else "print(1)",
            "observation": "…", "ok": not parse_error, "error_kind": "parse_error" if parse_error else None}
    checks = [{"name": name, "passed": False, "detail": ""} for name in failed] + [
        {"name": "no other changes", "passed": True, "detail": ""}]
    return {"task_id": task_id, "scenario_id": task_id.split("_")[0], "scenario": scenario, "difficulty": 1,
            "model": model, "success": success, "pass_pct": 100.0 if success else 50.0, "steps": 1, "error": error,
            "checks": checks, "trajectory": [step]}


def _journal(folder, model, split, records):
    (folder / f"{model}_{split}_episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def journals(tmp_path):
    send = [("a_1", "send_private"), ("a_2", "send_private"), ("b_1", "request_money")]
    _journal(tmp_path, "expert", "test_normal",
             [_record(t, s, "expert", True, f"Task: expert plan for {t}.") for t, s in send]
             + [_record("gone_1", "send_private", "expert", True, "a task no longer in the split")])
    _journal(tmp_path, "sft_full", "test_normal", [
        _record("a_1", "send_private", "sft_full", True, "Task: right."),
        _record("a_2", "send_private", "sft_full", False, "Task: send $98 | publicly.", failed=["paid privately"]),
        _record("b_1", "request_money", "sft_full", True, "Task: right.")])
    _journal(tmp_path, "lora", "test_normal", [
        _record("a_1", "send_private", "lora", False, "Task: wrong."),
        _record("a_2", "send_private", "lora", True, "Task: right."),
        _record("b_1", "request_money", "lora", True, "Task: right.")])
    _journal(tmp_path, "base", "test_normal", [
        _record(t, s, "base", False, "some prose", parse_error=True, error="3 replies in a row held no usable action")
        for t, s in send])
    _journal(tmp_path, "sft_full", "test_challenge", [_record("c_1", "split_bill", "sft_full", False, "Task: x.")])
    _journal(tmp_path, "expert", "test_challenge", [_record("c_1", "split_bill", "expert", True, "Task: split.")])
    return tmp_path


def _episodes(folder):
    return load_episodes(folder, {"test_normal": {"a_1", "a_2", "b_1"}, "test_challenge": {"c_1"}})


def test_success_per_task_type_counts_every_model_on_the_tasks_of_the_split(journals):
    table = success_by_type(_episodes(journals))
    assert list(table.columns) == ["tasks", "base", "sft_full", "lora", "expert"]
    assert [tuple(i) for i in table.index] == [("test_normal", "request_money"), ("test_normal", "send_private"),
                                               ("test_challenge", "split_bill")]  # the splits in the order given
    row = table.loc[("test_normal", "send_private")]
    assert (row["tasks"], row["base"], row["sft_full"], row["lora"], row["expert"]) == (2, 0.0, 50.0, 50.0, 100.0)


def test_the_best_trained_model_wins_on_the_first_split_and_ties_go_by_the_model_order(journals):
    episodes = _episodes(journals)
    assert best_trained_model(episodes, "test_normal") == "sft_full"  # 2 of 3, as LoRA: sft_full comes first
    assert best_trained_model(episodes[episodes["model"] != "sft_full"], "test_normal") == "lora"
    assert best_trained_model(episodes[episodes["model"].isin(["base", "expert"])], "test_normal") is None


def test_a_failing_episode_is_shown_beside_the_experts_first_thought(journals):
    examples = failure_examples(_episodes(journals), "sft_full", {"a_2": "Send a private payment of $98."})
    assert list(examples["task type"]) == ["send_private", "split_bill"]  # request_money never fails
    first = examples.iloc[0]
    assert (first["task"], first["failed"], first["instruction"]) == ("a_2", "1 of 2", "Send a private payment of $98.")
    assert first["sft_full's first thought"] == "Task: send $98 | publicly."
    assert first["expert's first thought"] == "Task: expert plan for a_2."
    assert first["what went wrong"] == "checks not met: paid privately"
    unreadable = failure_examples(_episodes(journals), "base", {}).iloc[0]
    assert unreadable["base's first thought"] == "(no usable reply) some prose"
    assert unreadable["what went wrong"].endswith("ended: 3 replies in a row held no usable action")


def test_the_report_is_markdown_with_escaped_cells(journals):
    report = failure_report(_episodes(journals), {}, "test_normal")
    assert "| test_normal | send_private | 2 | 0.0 | 50.0 | 50.0 | 100.0 |" in report
    assert "Task: send $98 \\| publicly." in report  # a pipe inside a cell would split it
    assert "`sft_full`" in report and "a task no longer in the split" not in report
    assert failure_report(load_episodes(journals, {"dev": set()}), {}, "dev").startswith("No evaluated episodes")
