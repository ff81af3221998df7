"""The contract's JSON Schemas (draft 2020-12) and validators for them.

The files in `device_sim/schemas/` are the artefact device makers use in any
language; this module only loads them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).with_name("schemas")
PAYLOADS = ("telemetry", "event", "status", "batch", "cmd", "device")


@cache
def schema(name: str) -> dict[str, Any]:
    with (SCHEMA_DIR / f"{name}.schema.json").open(encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, instance: Any) -> list[str]:
    """Human-readable schema violations of `instance` (empty: valid)."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]
