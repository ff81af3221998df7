"""Rejects reported by protocol gateways (docs/contract-extension.md).

A gateway cannot write the reject store (it imports no storage), so it
publishes what it keeps (a frame with a bad checksum, from an unregistered
address, of an unknown type) on `fs/v1/_gateway/{gateway}/reject` as
`{"ts", "reason", "detail", "raw": base64, "source"?, "device"?, "peer"?}`.
The decoder sees an unknown topic type there (a `bad_topic` reject); this step
turns each such reject into the gateway's own: its reason, its detail and
the frame's raw bytes as the payload. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from firesafe.contract import GATEWAY_REJECT_REASONS, GATEWAY_SITE, ID_RE, TOPIC_ROOT
from ingest.decode import DecodedBatch, Reject

_PREFIX = f"{TOPIC_ROOT}/{GATEWAY_SITE}/"


def _convert(r: Reject) -> Reject:
    parts = r.topic.split("/")
    if not (len(parts) == 5 and parts[4] == "reject" and ID_RE.match(parts[3])):
        return r
    try:
        body = orjson.loads(r.payload)
        reason = body["reason"]
        raw = base64.b64decode(body["raw"], validate=True)
        detail = str(body.get("detail", ""))
        device = body.get("device")
        source = body.get("source")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        return Reject(r.received_ms, r.topic, "bad_payload", r.payload, "not a gateway reject")
    if reason not in GATEWAY_REJECT_REASONS:
        return Reject(
            r.received_ms, r.topic, "bad_payload", r.payload, f"unknown reason {reason!r}"
        )
    if source:
        detail = f"{detail} [source {source}]"
    return Reject(
        r.received_ms,
        r.topic,
        reason,
        raw,
        detail,
        device if isinstance(device, str) and ID_RE.match(device) else None,
    )


def convert(batch: DecodedBatch) -> DecodedBatch:
    """Replace the batch's gateway-topic rejects by what the gateways reported."""
    if any(r.topic.startswith(_PREFIX) for r in batch.rejects):
        batch.rejects = [_convert(r) if r.topic.startswith(_PREFIX) else r for r in batch.rejects]
    return batch
