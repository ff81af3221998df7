"""The vocabulary of the external contract (v1; for devices: docs/devices.md).

Plain constants only: shared by ingest, detection, storage and api so that a
kind, reading or alarm type is spelled in exactly one place. The simulator
keeps its own copy on purpose (it must not share code that could hide a
contract mismatch).
"""

from __future__ import annotations

import re
from typing import Final

TOPIC_ROOT: Final = "fs/v1"
ID_PATTERN: Final = r"[A-Za-z0-9_-]{1,64}"
ID_RE: Final = re.compile(rf"^{ID_PATTERN}$")
MAX_PAYLOAD_BYTES: Final = 64 * 1024  # contract section 3
SEQ_MODULUS: Final = 2**32  # seq is a uint32 that wraps
# Event time accepted: 2000-01-01 to 2100-01-01 UTC (README). Outside it a
# clock is broken, and such a time must not reach detection, the database's
# date arithmetic or a client's date parser; the message is a `bad_value` reject.
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 4_102_444_800_000

KINDS: Final = ("smoke", "heat", "multi", "mcp", "electrical", "evac")

# Known reading names, in the column order of the telemetry table and of the
# detection feature matrix. Unknown names are stored (telemetry.extra) and
# otherwise ignored.
READINGS: Final = (
    "obscuration",  # %/m
    "temperature",  # °C
    "co",  # ppm
    "humidity",  # %RH
    "residual_current",  # mA
    "cable_temperature",  # °C
    "current",  # A
    "voltage",  # V
    "battery",  # % charge
    "mains",  # 1 on mains, 0 lost
    "lamp_ok",  # 1/0
)
READING_INDEX: Final = {name: i for i, name in enumerate(READINGS)}

KIND_READINGS: Final = {
    "smoke": ("obscuration", "temperature"),
    "heat": ("temperature",),
    "multi": ("obscuration", "temperature", "co", "humidity"),
    "mcp": (),
    "electrical": ("residual_current", "cable_temperature", "current", "voltage"),
    "evac": ("battery", "mains", "lamp_ok"),
}

KIND_EVENTS: Final = {
    "smoke": ("fire_alarm", "fault", "restore"),
    "heat": ("fire_alarm", "fault", "restore"),
    "multi": ("fire_alarm", "fault", "restore"),
    "mcp": ("activated", "reset"),
    "electrical": ("fault", "restore"),
    "evac": (
        "emergency_start",
        "emergency_end",
        "self_test_pass",
        "self_test_fail",
        "fault",
        "restore",
    ),
}

# --- Gateway extension (docs/contract-extension.md) -------------------------
# Kinds a protocol gateway registers (GB/T 26875.3: the user information
# transmission device, a fire-safety system such as a fire alarm panel, and a
# panel point that is none of the detector kinds above). They carry no readings
# the detection kernels score; their alarms come from the panel's own states.
GATEWAY_KINDS: Final = ("uitd", "panel", "point")
ALL_KINDS: Final = KINDS + GATEWAY_KINDS
# Panel states a gateway reports as events: a panel point's fire alarm (evidence
# awaiting corroboration or a person, never confirmed by time alone; in test
# mode a walk test's, told to no one and no evidence for its zone), the
# panel's reset (a pending fire is suppressed, a confirmed one stays latched),
# shielding (a state), operation records and the device clock (informational).
PANEL_EVENTS: Final = ("panel_fire", "panel_test", "panel_reset", "shielded", "unshielded")
GATEWAY_EVENTS: Final = {
    "smoke": PANEL_EVENTS,
    "heat": PANEL_EVENTS,
    "multi": PANEL_EVENTS,
    "mcp": ("panel_test", "panel_reset", "fault", "restore", "shielded", "unshielded"),
    "electrical": PANEL_EVENTS,
    "evac": PANEL_EVENTS,
    "uitd": ("panel_fire", "panel_test", "panel_reset", "fault", "restore", "operation", "clock"),
    "panel": (*PANEL_EVENTS, "fault", "restore", "operation"),
    "point": (*PANEL_EVENTS, "fault", "restore"),
}
# Every event a device of each kind may carry (devices' own plus gateways').
ALL_KIND_EVENTS: Final = {
    kind: tuple(dict.fromkeys(KIND_EVENTS.get(kind, ()) + GATEWAY_EVENTS[kind]))
    for kind in ALL_KINDS
}
EVENT_TYPES: Final = tuple(sorted({e for events in ALL_KIND_EVENTS.values() for e in events}))

# Reporting period when the registry gives no `interval_s`. A device is
# offline after 3 x this of silence (contract section 6). Detectors report
# every 10 s so that a 30 s verification window sees several samples;
# call points only send heartbeats; evac units report slowly-changing state.
DEFAULT_INTERVAL_S: Final = {
    "smoke": 10.0,
    "heat": 10.0,
    "multi": 10.0,
    "mcp": 60.0,
    "electrical": 10.0,
    "evac": 60.0,
    # A transmission device's heartbeat period is configured on the device
    # (often 10-60 s): set interval_s when registering it.
    "uitd": 60.0,
    # Panels and their points report on change only and are supervised by the
    # panel (fault bits) and the transmission device (heartbeats, connection):
    # silence says nothing about them, so their period is the longest allowed.
    "panel": 366 * 86_400.0,
    "point": 366 * 86_400.0,
}
OFFLINE_AFTER_INTERVALS: Final = 3

ALARM_TYPES: Final = ("fire", "pre_alarm", "electrical", "fault", "offline", "evac_fault")
VERDICTS: Final = ("pending", "confirmed", "suppressed")
STATUSES: Final = ("active", "acknowledged", "cleared")
ROLES: Final = ("admin", "operator", "manager")

# Reasons a message is kept in the reject store instead of being processed.
REJECT_REASONS: Final = (
    "too_large",  # payload > 64 KiB
    "bad_topic",  # not one of the contract's topic shapes
    "invalid_json",  # not UTF-8 JSON, or not a JSON object
    "missing_ts",  # no `ts` (a `ts` of the wrong type or range is bad_value)
    "missing_seq",  # no `seq` (one that is no uint32 is bad_value)
    "bad_value",  # a reading that is not a finite number (null, bool, string, NaN...)
    "bad_payload",  # any other shape error (`v` not an object, bad event type...)
    "unknown_device",  # device not registered
    "site_mismatch",  # registered at another site than the topic's
    # From protocol gateways (docs/contract-extension.md), raw frame bytes kept:
    "bad_frame",  # framing, length or checksum wrong: not confirmed, the device resends
    "unsupported",  # a well-formed frame of a type or command the gateway does not map
)
# Reasons a gateway may give on its reject topic.
GATEWAY_REJECT_REASONS: Final = ("bad_frame", "bad_payload", "unknown_device", "unsupported")
# Gateway extension topics (not device topics): `fs/v1/_gateway/{gateway}/reject`.
GATEWAY_SITE: Final = "_gateway"
