"""The task splits: train, dev, test_normal (seen types, unseen people and phrasings), test_challenge (unseen types)."""
from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

from helpers.metadata import write_json
from helpers.paths import TASKS_DIR
from helpers.tasks.scenarios import CHALLENGE_TYPES, SCENARIO_TYPES, TRAIN_TYPES
from helpers.tasks.schema import Task

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test_normal", "test_challenge")
VARIANTS_PER_SCENARIO = 3
DEFAULT_SCENARIOS_PER_TYPE = {"train": 8, "dev": 2, "test_normal": 3, "test_challenge": 4}

# which scenario types, name pool and phrasings each split draws from
_SPLIT_RULES = {
    "train": (TRAIN_TYPES, "seen", "templates"),
    "dev": (TRAIN_TYPES, "seen", "templates"),
    "test_normal": (TRAIN_TYPES, "unseen", "held_out"),
    "test_challenge": (CHALLENGE_TYPES, "unseen", "templates"),
}


def scenario_id(split: str, type_name: str, index: int, seed: int) -> str:
    """A short stable hex id, like AppWorld's."""
    return hashlib.sha1(f"{seed}:{split}:{type_name}:{index}".encode()).hexdigest()[:7]


def build_split(split: str, scenarios_per_type: int, seed: int = 0) -> list[Task]:
    """Generate a split deterministically from the seed: every scenario has three variants."""
    if split not in _SPLIT_RULES:
        raise ValueError(f"Unknown split '{split}': choose one of {', '.join(SPLITS)}.")
    type_names, pool, phrasings = _SPLIT_RULES[split]
    tasks = []
    for type_name in type_names:
        kind = SCENARIO_TYPES[type_name]
        templates = getattr(kind, phrasings)
        # the phrasings are taken in turn from a seeded start, so that a split with as many scenarios as
        # phrasings uses every one of them (a random draw per scenario left some unused and repeated others)
        first = random.Random(f"{scenario_id(split, type_name, 0, seed)}:template").randrange(len(templates))
        for index in range(scenarios_per_type):
            sid = scenario_id(split, type_name, index, seed)
            template = templates[(first + index) % len(templates)]
            for variant in range(1, VARIANTS_PER_SCENARIO + 1):
                built = kind.build(random.Random(f"{sid}:{variant}"), pool)
                tasks.append(Task(
                    id=f"{sid}_{variant}", scenario_id=sid, scenario=type_name, difficulty=kind.difficulty,
                    instruction=template.format(**built.fields), world=built.world,
                    checks=built.checks, slots=built.slots,
                ))
    return tasks


def build_suite(seed: int = 0, scenarios_per_type: dict[str, int] | None = None,
                directory: Path = TASKS_DIR) -> dict[str, Path]:
    """Write every split to `<directory>/<split>.jsonl` and return the paths.

    A split file that this function did not write (edited, or placed there by hand) is never overwritten:
    it is moved aside under a new name, with one line saying so.
    """
    sizes = {**DEFAULT_SCENARIOS_PER_TYPE, **(scenarios_per_type or {})}
    paths = {}
    for split in SPLITS:
        path = Path(directory) / f"{split}.jsonl"
        text = "".join(task.model_dump_json() + "\n" for task in build_split(split, sizes[split], seed))
        _keep_if_not_generated(path, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        write_json(_record_path(path), {"generator": "helpers.tasks.build_suite", "seed": seed,
                                        "scenarios_per_type": sizes[split], "tasks": text.count("\n"),
                                        "sha256": _sha256(text.encode())})
        paths[split] = path
    return paths


def _record_path(path: Path) -> Path:
    return path.with_name(path.stem + ".metadata.json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keep_if_not_generated(path: Path, text: str) -> None:
    """Move `path` aside unless it is what build_suite wrote last (or exactly what it is about to write)."""
    if not path.exists():
        return
    current = _sha256(path.read_bytes())
    try:
        written = json.loads(_record_path(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        written = None
    if current in (written, _sha256(text.encode())):
        return
    number = 1
    while (kept := path.with_name(f"{path.stem}.kept-{number}.jsonl")).exists():
        number += 1
    path.replace(kept)
    log.warning("%s was not written by build_suite (edited or placed by hand): kept as %s; to evaluate your own "
                "tasks, list their files in extra_task_files.", path, kept.name)
