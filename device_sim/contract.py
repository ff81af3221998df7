"""The simulator's own copy of the contract vocabulary (CONTRACT.md v1).

Deliberately not imported from `firesafe.contract`: the simulator stands where
a device maker stands and must read the contract text independently.
"""

from __future__ import annotations

import re
from typing import Final

TOPIC_ROOT: Final = "fs/v1"
ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # contract section 1: {site}, {device}
MAX_PAYLOAD_BYTES: Final = 64 * 1024  # contract section 3
SEQ_MODULUS: Final = 2**32  # seq is a uint32 that wraps (section 1)

KINDS: Final = ("smoke", "heat", "multi", "mcp", "electrical", "evac")

KIND_READINGS: Final[dict[str, tuple[str, ...]]] = {
    "smoke": ("obscuration", "temperature"),
    "heat": ("temperature",),
    "multi": ("obscuration", "temperature", "co", "humidity"),
    "mcp": (),
    "electrical": ("residual_current", "cable_temperature", "current", "voltage"),
    "evac": ("battery", "mains", "lamp_ok"),
}
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

KIND_EVENTS: Final[dict[str, tuple[str, ...]]] = {
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
EVENT_TYPES: Final = tuple(sorted({e for events in KIND_EVENTS.values() for e in events}))

# Reporting periods the simulated devices use (and register as `interval_s`):
# detectors and electrical monitors every 10 s, call-point heartbeats and
# emergency lights every 60 s (the defaults).
DEFAULT_INTERVAL_S: Final[dict[str, int]] = {
    "smoke": 10,
    "heat": 10,
    "multi": 10,
    "mcp": 60,
    "electrical": 10,
    "evac": 60,
}
# A device is offline after this many intervals of silence (section 6).
OFFLINE_AFTER_INTERVALS: Final = 3

ALARM_TYPES: Final = ("fire", "pre_alarm", "electrical", "fault", "offline", "evac_fault")


def telemetry_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{device}/telemetry"


def event_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{device}/event"


def status_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{device}/status"


def cmd_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{device}/cmd"


def batch_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/gateway/{gateway}/batch"
