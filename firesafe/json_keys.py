"""JSON objects that give a key twice. JSON keeps one of the two (the last), so
one reading would silently replace another: the API refuses such a body,
ingest rejects such a message, and the conformance check says so.

Parse with `object_pairs_hook=pairs`; `repeated(value)` then names the first
repeated key in the value or the objects inside it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def first_repeated(items: Sequence[tuple[str, Any]]) -> str | None:
    """The first key of an object's (key, value) pairs that comes a second time."""
    seen: set[str] = set()
    for key, _ in items:
        if key in seen:
            return key
        seen.add(key)
    return None


class Pairs(dict[str, Any]):
    """A JSON object as `pairs` builds it: `dup`, its first key given twice."""

    dup: str | None = None


def pairs(items: list[tuple[str, Any]]) -> Pairs:
    obj = Pairs(items)
    if len(obj) != len(items):  # (the common case costs one len() per object)
        obj.dup = first_repeated(items)
    return obj


def repeated(value: Any) -> str | None:
    """The first repeated key in `value` (parsed with `pairs`) or inside it."""
    if isinstance(value, Pairs):
        if value.dup is not None:
            return value.dup
        return next((k for k in map(repeated, value.values()) if k is not None), None)
    if isinstance(value, list):
        return next((k for k in map(repeated, value) if k is not None), None)
    return None
