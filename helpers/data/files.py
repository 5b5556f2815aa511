"""Writing datasets as JSONL with a sibling metadata JSON, and reading them back."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from helpers.metadata import run_metadata, write_json


def metadata_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".metadata.json")


def write_jsonl(records: Iterable[dict], path: str | Path, *, generator: str, profile: str, seed: int,
                **details) -> Path:
    """Write one record per line and `<name>.metadata.json` beside it (generator, seed, counts, versions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    write_json(metadata_path(path), run_metadata(profile, seed, generator=generator, records=count,
                                                 file=path.name, **details))
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
