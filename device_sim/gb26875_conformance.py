"""`firesafe conformance --gb26875 --listen PORT`: a stand-in monitoring centre.

A device maker points a real transmission device at it. It confirms the
device's send-data frames like a centre does, except the first data frame
(not a heartbeat), whose confirm it withholds once to see the device resend
it, and judges what arrives, one line per rule:

framing, checksum, version, command, serial_numbers, resend, time_labels,
heartbeats, application_data, descriptions.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from device_sim import gb26875_wire as w
from device_sim.conformance import RuleResult

MAX_EXAMPLES: Final = 3
DEFAULT_MAX_SKEW_S: Final = 300.0
DEFAULT_HEARTBEAT_MAX_S: Final = 120.0  # a heartbeat period longer than this is unusual


@dataclass
class _Rule:
    checked: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)

    def check(self, ok: bool, example: str = "") -> None:
        self.checked += 1
        if not ok:
            self.failed += 1
            if example and len(self.examples) < MAX_EXAMPLES:
                self.examples.append(example)


RULES: Final = (
    "framing",
    "checksum",
    "version",
    "command",
    "serial_numbers",
    "resend",
    "time_labels",
    "heartbeats",
    "application_data",
    "descriptions",
)


class Centre:
    """Collects and judges frames; one instance for all connections."""

    def __init__(
        self,
        *,
        utc_offset_min: int = w.CST_MIN,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        heartbeat_max_s: float = DEFAULT_HEARTBEAT_MAX_S,
        withhold: bool = True,
    ) -> None:
        self.offset = utc_offset_min
        self.max_skew_ms = max_skew_s * 1000
        self.heartbeat_max_ms = heartbeat_max_s * 1000
        self.rules = {r: _Rule() for r in RULES}
        self.observed = 0
        self.withhold = withhold
        self.withheld: w.Seen | None = None
        self.resent = False
        self.last: dict[bytes, w.Seen] = {}  # source -> last distinct frame
        self.heartbeats: dict[bytes, list[float]] = {}
        self.notes: dict[str, str] = {}

    def see(self, seen: w.Seen, arrival_ms: int) -> bool:
        """Judge one frame; True when the centre confirms it."""
        self.observed += 1
        r = self.rules
        if seen.command < 0:
            r["framing"].check(False, seen.problem)
            return False
        r["framing"].check(True)
        r["checksum"].check(not seen.problem, f"serial {seen.serial}: {seen.problem}")
        if seen.problem:
            return False
        r["version"].check(seen.version in ((1, 0), (1, 1)), f"version {seen.version}")
        r["command"].check(
            seen.command in (w.SEND_DATA, w.CONFIRM, 5, 6),
            f"serial {seen.serial}: command {seen.command} from a device",
        )
        if seen.command != w.SEND_DATA:
            return False
        ms = w.label_to_ms(seen.label, self.offset)
        r["time_labels"].check(
            ms is not None and abs(ms - arrival_ms) <= self.max_skew_ms,
            f"serial {seen.serial}: frame time label {seen.label.hex()} "
            + ("is not a date" if ms is None else f"is {(ms - arrival_ms) / 1000:+.0f} s off"),
        )
        self._serial(seen)
        if not seen.data:
            self.heartbeats.setdefault(seen.source, []).append(arrival_ms)
        else:
            self._data(seen)
        if self.withhold and seen.data and self.withheld is None:
            self.withheld = seen
            return False
        w_ = self.withheld
        if w_ is not None and seen.serial == w_.serial and seen.data == w_.data:
            self.resent = True  # same serial and content (its time label may be new)
        return True

    def _serial(self, seen: w.Seen) -> None:
        prev = self.last.get(seen.source)
        self.last[seen.source] = seen
        if prev is None:
            return
        rule = self.rules["serial_numbers"]
        if seen.serial == prev.serial:
            same = seen.data == prev.data and seen.command == prev.command
            rule.check(same, f"serial {seen.serial} reused for different content")
        else:
            rule.check(
                seen.serial == (prev.serial + 1) & 0xFFFF,
                f"serial {prev.serial} followed by {seen.serial}",
            )

    def _data(self, seen: w.Seen) -> None:
        data = seen.data
        ok = len(data) >= 2
        size = w.OBJECT_BYTES.get(data[0]) if ok else None
        if ok and size is not None:
            ok = len(data) == 2 + data[1] * size
        self.rules["application_data"].check(
            ok, f"serial {seen.serial}: type {data[:1].hex()} count/length mismatch ({len(data)} B)"
        )
        if not ok:
            return
        if size is None:
            self.notes["application_data"] = f"type {data[0]} kept, not checked"
            return
        for i in range(data[1]):
            obj = data[2 + i * size : 2 + (i + 1) * size]
            label = obj[-6:]
            self.rules["time_labels"].check(
                w.label_to_ms(label, self.offset) is not None,
                f"serial {seen.serial} object {i}: time label {label.hex()} is not a date",
            )
            if data[0] == 2:
                text = obj[9:40].split(b"\x00", 1)[0]
                try:
                    text.decode("gb18030")
                    good = True
                except UnicodeDecodeError:
                    good = False
                self.rules["descriptions"].check(
                    good, f"serial {seen.serial} object {i}: {text.hex()} is not GB 18030"
                )

    def report(self) -> list[RuleResult]:
        out: list[RuleResult] = []
        hb = self.rules["heartbeats"]
        gaps = [b - a for times in self.heartbeats.values() for a, b in itertools.pairwise(times)]
        for g in gaps:
            hb.check(g <= self.heartbeat_max_ms, f"{g / 1000:.0f} s between heartbeats")
        if not self.heartbeats:
            hb.check(False, "no heartbeat (send data with no application data) seen")
        else:
            hb.checked += 1
        rs = self.rules["resend"]
        if self.withheld is not None:
            rs.check(self.resent, f"serial {self.withheld.serial} was not resent unchanged")
        for name in RULES:
            rule = self.rules[name]
            status = "skip" if rule.checked == 0 else ("fail" if rule.failed else "pass")
            note = self.notes.get(name, "")
            if name == "heartbeats" and gaps:
                note = f"longest gap {max(gaps) / 1000:.0f} s"
            out.append(RuleResult(name, status, rule.checked, rule.failed, rule.examples, note))
        return out


async def serve(centre: Centre, host: str, port: int, duration_s: float) -> None:
    handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers[task] = writer
        task.add_done_callback(handlers.pop)
        buf = bytearray()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                for seen in w.split(buf):
                    now = int(time.time() * 1000)
                    if centre.see(seen, now):
                        writer.write(w.confirm(seen, w.time_label(now, centre.offset)))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await asyncio.sleep(duration_s)
        # Devices still connected at the end are disconnected, so their handlers
        # end here (a handler cancelled by the loop's shutdown printed a
        # CancelledError traceback before the report).
        for writer in list(handlers.values()):
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)


def render(results: Iterable[RuleResult], observed: int) -> str:
    from device_sim.conformance import render as render_rules

    return render_rules(results, observed)
