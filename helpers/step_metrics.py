"""Scoring single steps: does a model's next action on a recorded prompt match the expert's?"""
from __future__ import annotations

import pandas as pd

from helpers.prompts import ActionParseError, parse_action


def normalize_code(code: str) -> str:
    """Code compared modulo trailing spaces and blank lines; the JSON around it is already parsed away."""
    lines = [line.rstrip() for line in code.strip().splitlines()]
    return "\n".join(line for line in lines if line)


def action_matches(records: list[dict], replies: list[str]) -> pd.DataFrame:
    """One row per step record: the expert's action, the model's reply, whether it parsed and matched."""
    rows = []
    for record, reply in zip(records, replies):
        expected = parse_action(record["completion"][0]["content"]).code
        try:
            predicted, parsed = parse_action(reply).code, True
        except ActionParseError:
            predicted, parsed = "", False
        rows.append({"task_id": record["task_id"], "scenario": record["scenario"], "step": record["step"],
                     "parsed": parsed, "match": parsed and normalize_code(predicted) == normalize_code(expected),
                     "expected": expected, "predicted": predicted, "reply": reply})
    return pd.DataFrame(rows)
