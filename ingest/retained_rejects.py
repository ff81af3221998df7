"""Retained messages that are rejects, kept once.

A broker sends every retained message on a topic again at each subscription:
ingest's start, and every reconnection (after a broker or database outage).
A retained `status` of a device nobody registered would become a new
`unknown_device` reject each time, and an alert on rising rejects would fire
after every outage. The same retained message (topic and payload) is kept
the first time this process sees it, not again. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from ingest.decode import DecodedBatch, RawMessage

# Bound on what is remembered (a topic flood must not grow memory): past it,
# the memory starts over, at worst storing a retained reject once more.
REMEMBER_MAX = 100_000


class RetainedRejects:
    def __init__(self) -> None:
        self._seen: set[tuple[bytes, bytes]] = set()  # digests: topics can be 64 KiB

    def drop_repeats(self, burst: Sequence[RawMessage], batch: DecodedBatch) -> DecodedBatch:
        """The batch without the rejects of retained messages already kept."""
        retained = {(_topic_digest(m.topic), _digest(m.payload)) for m in burst if m.retained}
        if not retained or not batch.rejects:
            return batch
        kept = []
        for r in batch.rejects:
            key = (_topic_digest(r.topic), _digest(r.payload))
            if key in retained:
                if key in self._seen:
                    continue
                if len(self._seen) >= REMEMBER_MAX:
                    self._seen.clear()
                self._seen.add(key)
            kept.append(r)
        return batch if len(kept) == len(batch.rejects) else replace(batch, rejects=kept)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def _topic_digest(topic: str) -> bytes:
    return _digest(topic.encode(errors="surrogatepass"))
