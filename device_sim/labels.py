"""Ground-truth labels as JSON Lines: one injected scenario per line."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from device_sim.scenarios import Label


def write_labels(path: Path, labels: Iterable[Label]) -> int:
    """Write `labels` to `path` (JSON Lines); returns how many."""
    n = 0
    with path.open("wb") as f:
        for label in labels:
            f.write(orjson.dumps(label.to_json()) + b"\n")
            n += 1
    return n


def read_labels(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]
