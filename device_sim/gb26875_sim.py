"""`firesafe sim --protocol gb26875`: transmission devices in front of fire panels.

Each simulated user information transmission device (uitd) holds one TCP
connection to the monitoring centre (the gateway) and behaves like the field
devices do: it reports the state of every point of its panel when it
connects, heartbeats (command 2, no data) every `heartbeat_s`, and plays its
panel's life: a detector's fire alarm and the panel's reset, a call point
pressed and reset, a point's fault and its restore, a mains failure of the
panel and of itself, analog temperatures of heat detectors. Every send-data
frame waits for its confirm (same serial number); one that is not confirmed
within `resend_s` is sent again, byte for byte; a lost connection is
re-established and the unconfirmed frame resent. Frames are split across
writes at random (`split_p`), as TCP may deliver them.

The uitds are registered through the REST API (kind `uitd`, with `address`);
their points are registered by the gateway on their first frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Final

from device_sim import gb26875_wire as w
from firesafe.throttle import ThrottledWarning

log = logging.getLogger(__name__)
_UNREACHABLE = ThrottledWarning(log, "cannot connect to the centre")

HEARTBEAT_S: Final = 20.0
RESEND_S: Final = 5.0  # devices typically resend after 3-10 s
SPLIT_P: Final = 0.3
OBJECTS_PER_FRAME: Final = 20  # 20 x 46 + 2 bytes < 1024
RECONNECT_S: Final = 2.0
OVERRUN_MIN_S: Final = 60.0  # see `overrun_s`
FIRE_SYSTEM: Final = 1
# (component type, share, description suffix) of a panel's points.
POINT_MIX: Final = (
    (42, 0.55, "感烟探测器"),  # photoelectric smoke
    (31, 0.15, "感温探测器"),  # point heat
    (23, 0.10, "手动报警按钮"),  # manual call point
    (51, 0.05, "复合探测器"),  # smoke and heat
    (85, 0.10, "输入模块"),  # input module
    (17, 0.05, "剩余电流探测器"),  # residual-current electrical fire detector
)


@dataclass
class Point:
    system_type: int
    system_address: int
    component_type: int
    address: int
    text: str
    flags: int = 0x0001  # normal


@dataclass
class SimUitd:
    id: str
    site: str
    building: str
    address: bytes  # 6 bytes, low first
    points: list[Point]
    serial: int = 0

    @property
    def address_hex(self) -> str:
        return self.address[::-1].hex().upper()

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial


@dataclass
class Stats:
    frames: int = 0
    confirmed: int = 0
    resent: int = 0
    reconnects: int = 0
    heartbeats: int = 0
    splits: int = 0
    stopped: int = 0  # devices still waiting for a confirmation at the run's end
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        dt = max(time.monotonic() - self.started, 1e-9)
        return (
            f"sim gb26875: {dt:7.1f}s  {self.frames:,} frames ({self.frames / dt:,.0f}/s), "
            f"{self.confirmed:,} confirmed, {self.resent:,} resent, "
            f"{self.heartbeats:,} heartbeats, {self.reconnects} reconnects"
            + (f", {self.stopped} stopped unconfirmed" if self.stopped else "")
        )


def make_estate(count: int, points: int, seed: int, site_prefix: str = "S") -> list[SimUitd]:
    rng = random.Random(seed)
    out: list[SimUitd] = []
    for i in range(count):
        site = f"{site_prefix}{i + 1:03d}"
        pts: list[Point] = []
        for j in range(points):
            r, acc = rng.random(), 0.0
            ct, text = POINT_MIX[0][0], POINT_MIX[0][2]
            for kind, share, name in POINT_MIX:
                acc += share
                if r < acc:
                    ct, text = kind, name
                    break
            floor = 1 + j // 20
            st = 16 if ct == 17 else FIRE_SYSTEM
            pts.append(Point(st, 1, ct, 0x100 + j, f"{floor}F{j % 20 + 1}号{text}"))
        address = (0x2600_0000 + i).to_bytes(6, "little")
        out.append(SimUitd(f"{site}-UITD1", site, "B1", address, pts))
    return out


def registry(uitds: list[SimUitd], heartbeat_s: float) -> list[dict[str, Any]]:
    return [
        {
            "id": u.id,
            "site": u.site,
            "building": u.building,
            "floor": "1",
            "zone": "control-room",
            "kind": "uitd",
            "name": f"用户信息传输装置 {u.site}",
            "address": u.address_hex,
            # Offline after 3 missed heartbeats.
            "interval_s": heartbeat_s,
        }
        for u in uitds
    ]


class Device:
    """One uitd's connection and its resend discipline."""

    def __init__(
        self,
        uitd: SimUitd,
        host: str,
        port: int,
        stats: Stats,
        rng: random.Random,
        *,
        resend_s: float = RESEND_S,
        split_p: float = SPLIT_P,
    ) -> None:
        self.u, self.host, self.port, self.stats, self.rng = uitd, host, port, stats, rng
        self.resend_s, self.split_p = resend_s, split_p
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = bytearray()

    async def connect(self) -> None:
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.buf.clear()
                return
            except OSError as exc:
                # Said, at most a line per 10 s for all devices: a wrong --gateway
                # looked like a simulator doing nothing.
                _UNREACHABLE(f"{self.host}:{self.port}: {exc}")
                await asyncio.sleep(RECONNECT_S)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def send(self, data: bytes, command: int = w.SEND_DATA) -> None:
        """Send one frame until it is confirmed (resending the same bytes)."""
        serial = self.u.next_serial()
        frame = w.encode(
            serial, command, data, source=self.u.address, label=w.time_label(_now_ms())
        )
        self.stats.frames += 1
        if not data:
            self.stats.heartbeats += 1
        first = True
        while True:
            if self.writer is None:
                await self.connect()
            if not first:
                self.stats.resent += 1
            first = False
            try:
                await self._write(frame)
                if await self._confirmed(serial):
                    self.stats.confirmed += 1
                    return
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                self.stats.reconnects += 1
                await self.close()
                self.writer = None
                await asyncio.sleep(RECONNECT_S * self.rng.uniform(0.5, 1.0))

    async def _write(self, frame: bytes) -> None:
        assert self.writer is not None
        if self.rng.random() < self.split_p:
            cut = self.rng.randrange(1, len(frame))
            self.stats.splits += 1
            self.writer.write(frame[:cut])
            await self.writer.drain()
            await asyncio.sleep(self.rng.uniform(0, 0.02))
            self.writer.write(frame[cut:])
        else:
            self.writer.write(frame)
        await self.writer.drain()

    async def _confirmed(self, serial: int) -> bool:
        assert self.reader is not None
        deadline = time.monotonic() + self.resend_s
        while True:
            for seen in w.split(self.buf):
                if seen.command == w.CONFIRM and seen.serial == serial and not seen.problem:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                chunk = await asyncio.wait_for(self.reader.read(4096), left)
            except TimeoutError:
                return False
            if not chunk:
                raise ConnectionResetError("centre closed the connection")
            self.buf += chunk

    # --- what a panel reports ----------------------------------------------
    async def report_points(self, points: list[Point]) -> None:
        label = w.time_label(_now_ms())
        for i in range(0, len(points), OBJECTS_PER_FRAME):
            objs = [
                w.component_object(
                    p.system_type, p.system_address, p.component_type, p.address, p.flags,
                    p.text, label,
                )
                for p in points[i : i + OBJECTS_PER_FRAME]
            ]  # fmt: skip
            await self.send(w.data_unit(2, objs))

    async def set_flags(self, point: Point, flags: int) -> None:
        point.flags = flags
        await self.report_points([point])

    async def system_power(self, fault: bool) -> None:
        label = w.time_label(_now_ms())
        flags = 0x0001 | (0x0100 if fault else 0)
        await self.send(w.data_unit(1, [w.system_object(FIRE_SYSTEM, 1, flags, label)]))
        await self.send(w.data_unit(21, [w.uitd_object(0x01 | (0x10 if fault else 0), label)]))

    async def temperatures(self) -> None:
        heat = [p for p in self.u.points if p.component_type == 31]
        if not heat:
            return
        label = w.time_label(_now_ms())
        objs = [
            w.analog_object(p.system_type, 1, 31, p.address, 3, self.rng.randint(200, 280), label)
            for p in heat[:OBJECTS_PER_FRAME]
        ]
        await self.send(w.data_unit(3, objs))


def _now_ms() -> int:
    return int(time.time() * 1000)


async def play(
    device: Device,
    duration_s: float,
    stop: asyncio.Event,
    *,
    heartbeat_s: float = HEARTBEAT_S,
    analog_s: float = 30.0,
) -> None:
    """The uitd's life for `duration_s`: reports, heartbeats and incidents."""
    try:
        await _play(device, duration_s, stop, heartbeat_s, analog_s)
    finally:
        await device.close()


async def _play(
    device: Device, duration_s: float, stop: asyncio.Event, heartbeat_s: float, analog_s: float
) -> None:
    rng, u = device.rng, device.u
    await device.connect()
    await device.report_points(u.points)
    start = time.monotonic()
    plan: list[tuple[float, str, Point | None]] = []

    def pick(types: tuple[int, ...]) -> Point | None:
        found = [p for p in u.points if p.component_type in types]
        return rng.choice(found) if found else None

    for what, types in (("fire", (42, 51)), ("call", (23,)), ("fault", (42, 31, 85))):
        point = pick(types)
        at = rng.uniform(0.1, 0.6) * duration_s
        plan += [(at, what, point), (at + rng.uniform(0.1, 0.3) * duration_s, what + "_end", point)]
    at = rng.uniform(0.1, 0.6) * duration_s
    plan += [(at, "power", None), (at + 0.2 * duration_s, "power_end", None)]
    plan.sort(key=lambda x: x[0])
    next_hb = start + heartbeat_s
    next_analog = start + rng.uniform(0, analog_s)
    while not stop.is_set():
        now = time.monotonic()
        if now - start >= duration_s:
            break
        while plan and now - start >= plan[0][0]:
            _, what, point = plan.pop(0)
            if what == "power" or what == "power_end":
                await device.system_power(what == "power")
            elif point is not None:
                flags = {"fire": 0x0003, "call": 0x0003, "fault": 0x0005}.get(what, 0x0001)
                await device.set_flags(point, flags)
        if now >= next_hb:
            next_hb = now + heartbeat_s
            await device.send(b"")
        if now >= next_analog:
            next_analog = now + analog_s
            await device.temperatures()
        with_timeout = min(next_hb, next_analog) - time.monotonic()
        if plan:
            with_timeout = min(with_timeout, start + plan[0][0] - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.01, with_timeout))


async def run(
    uitds: list[SimUitd],
    host: str,
    port: int,
    duration_s: float,
    seed: int,
    *,
    heartbeat_s: float = HEARTBEAT_S,
    resend_s: float = RESEND_S,
    split_p: float = SPLIT_P,
    stop: asyncio.Event | None = None,
    progress_s: float = 10.0,
    overrun: float | None = None,
) -> Stats:
    stats = Stats()
    stop = stop or asyncio.Event()
    devices = [
        Device(u, host, port, stats, random.Random(seed * 1_000_003 + i), resend_s=resend_s,
               split_p=split_p)
        for i, u in enumerate(uitds)
    ]  # fmt: skip

    async def progress() -> None:
        while True:
            await asyncio.sleep(progress_s)
            log.info("%s", stats.line())

    async with asyncio.TaskGroup() as tasks:
        reporter = tasks.create_task(progress(), name="sim-gb26875-progress")
        players = [
            tasks.create_task(play(d, duration_s, stop, heartbeat_s=heartbeat_s), name=d.u.id)
            for d in devices
        ]
        # A device resends until the centre confirms: one that never answers
        # would keep the run going for ever. Its clock starts once its points
        # are reported, so this leaves that room (a slow centre is no error).
        limit = duration_s + (overrun_s(duration_s) if overrun is None else overrun)
        _, late = await asyncio.wait(players, timeout=limit)
        if late:
            stop.set()
            _, late = await asyncio.wait(late, timeout=resend_s)
        for player in late:
            player.cancel()
        stats.stopped = len(late)
        if late:
            log.warning(
                "%d transmission device(s) still had a frame unconfirmed by the centre %s:%d "
                "at the end of the run: stopped",
                len(late),
                host,
                port,
            )
        reporter.cancel()
    return stats


def overrun_s(duration_s: float) -> float:
    """How long past `duration_s` a run may take to reach the centre and have
    its last frames confirmed."""
    return max(OVERRUN_MIN_S, duration_s)
