"""The GB/T 26875.3 gateway over real TCP with the broker and the registry
stood in for (no broker, no API, no database: fast): what it publishes for a
frame and how it answers it.

The outside check's findings: a heartbeat published `online` twice, and a
call point's fire in an object cut short was confirmed to the panel while
no alarm was raised and the reject did not mention it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from gateways.gb26875 import codec as c
from gateways.gb26875.mapping import Component, Uitd
from gateways.gb26875.server import Gateway
from tests.gb26875_frames import adu, frame, uitd_status

SOURCE = bytes([0xA7, 0x01, 0, 0, 0, 0])  # address 0000000001A7
UITD = Uitd(id="U7", site="S1", building="B1", floor="1", zone="Z")
NOW = datetime(2026, 3, 14, 9, 26, 53)  # the frames' time (UTC+8)


class FakePublisher:
    """Acknowledges every message at once and keeps it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish_nowait(
        self, messages: Sequence[tuple[str, bytes, bool]], ack_timeout_s: float = 0
    ) -> asyncio.Future[bool]:
        self.sent.extend(messages)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(True)
        return future

    async def publish_all(self, messages: Sequence[tuple[str, bytes, bool]]) -> bool:
        return await self.publish_nowait(messages)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(device, payload) of every event published."""
        return [
            (topic.split("/")[3], orjson.loads(payload))
            for topic, payload, _ in self.sent
            if topic.endswith("/event")
        ]

    def rejects(self) -> list[dict[str, Any]]:
        return [orjson.loads(p) for t, p, _ in self.sent if t.endswith("/reject")]

    def statuses(self) -> list[bytes]:
        return [p for t, p, _ in self.sent if t.endswith("/status")]


class FakeDirectory:
    """One registered uitd (UITD, at SOURCE); every point already registered."""

    def __init__(self, registered: bool = True) -> None:
        self.known = registered

    def cached(self, address: str) -> Uitd | None:
        return UITD if self.known and address == c.address_hex(SOURCE) else None

    async def lookup(self, address: str) -> Uitd | None:
        return self.cached(address)

    def registered(self, components: Sequence[Component]) -> bool:
        return True

    async def known_ids(self, site: str, prefix: str) -> set[str]:
        return set()

    async def ensure(self, components: Sequence[Component]) -> None:
        return None


def exchange(
    *frames: bytes, registered: bool = True
) -> tuple[list[tuple[int, int]], FakePublisher]:
    """Send the frames on one connection, one after the other: the answers
    ((serial, command) each) and what the gateway published."""
    publisher = FakePublisher()

    async def main() -> list[tuple[int, int]]:
        gateway = Gateway(publisher, FakeDirectory(registered), idle_s=30)  # type: ignore[arg-type]
        stop = asyncio.Event()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            gateway.serve("127.0.0.1", 0, stop, lambda host, port: ready.set_result(port))
        )
        port = await asyncio.wait_for(ready, 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for raw in frames:
            writer.write(raw)
            answer = await asyncio.wait_for(reader.readexactly(30), 5)
            answers.append((answer[2] | answer[3] << 8, answer[26]))
        writer.close()
        stop.set()
        await server
        return answers

    return asyncio.run(main()), publisher


def test_a_heartbeat_publishes_online_once() -> None:
    """The first frame of a connection announces the uitd `online`; a heartbeat
    is that announcement itself, not a second one (the check saw two)."""
    answers, published = exchange(
        frame(1, b"", source=SOURCE, when=NOW), frame(2, b"", source=SOURCE, when=NOW)
    )
    assert answers == [(1, c.CMD_CONFIRM), (2, c.CMD_CONFIRM)]
    # One per heartbeat (the second keeps the retained status fresh), never two for one.
    assert published.statuses() == [b"online", b"online"]
    # A data frame first announces the uitd as well, once.
    _, published = exchange(
        frame(3, adu(21, uitd_status(0x01, NOW)), source=SOURCE, when=NOW),
        frame(4, b"", source=SOURCE, when=NOW),
    )
    assert published.statuses() == [b"online", b"online"]
