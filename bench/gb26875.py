"""GB/T 26875.3 gateway throughput: frames/s through one gateway process into the
platform, with many transmission devices connected at once.

    python bench/gb26875.py --database-url postgresql://... --mqtt-url mqtt://... \
        [--connections 1000] [--duration 10] [--no-ingest]

A scratch database is migrated; the API, ingest and one gateway run as
`firesafe` child processes, as in production. N transmission devices are
registered through the API; each holds its own TCP connection and behaves as
a device does: it sends a frame (a point's status, alternating fault and
restore: one event each), waits for the confirm, sends the next. After a
warm-up (the points' first frames register them), confirmed frames are
counted for `--duration` seconds. Reported: frames/s confirmed (the gateway
confirms only what the broker acknowledged), as a ratio of the issue's target
of 5,000/s; connections held to the end; gateway CPU per 1,000 frames; and,
with ingest, how long until every event of the window is in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from bench.common import scratch_database
from device_sim import gb26875_wire as w
from storage.migrate import migrate

TARGET_FPS = 5_000  # issue #11
POINTS_PER_UITD = 4
WARMUP_S = 5.0  # every device's points registered (first frames) before counting
RESEND_S = 10.0  # a device waits this long for a confirm (none missed in a healthy run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child(
    args: list[str], env: dict[str, str], profile: str | None = None
) -> subprocess.Popen[bytes]:
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    return subprocess.Popen(
        [sys.executable, *prefix, "-m", "firesafe.cli", *args], env=env, stdin=subprocess.DEVNULL
    )


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counter:
    def __init__(self) -> None:
        self.confirmed = 0
        self.total = 0  # warm-up included
        self.counting = False
        self.latencies: list[float] = []
        self.open = 0
        self.failed = 0


async def device(i: int, port: int, counter: Counter, stop: asyncio.Event) -> None:
    address = (0x3000_0000 + i).to_bytes(6, "little")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    counter.open += 1
    buf = bytearray()
    serial = 0
    try:
        while not stop.is_set():
            serial = (serial + 1) & 0xFFFF
            # Each point alternates fault and restore: every frame is one event.
            flip = (serial // POINTS_PER_UITD) % 2
            label = w.time_label(int(time.time() * 1000))
            objs = [
                w.component_object(1, 1, 42, 0x100 + (serial % POINTS_PER_UITD),
                                   0x0005 if flip else 0x0001, f"{i}号感烟", label)
            ]  # fmt: skip
            frame = w.encode(serial, w.SEND_DATA, w.data_unit(2, objs), source=address, label=label)
            sent = time.perf_counter()
            writer.write(frame)
            await writer.drain()
            confirmed = False
            while not confirmed:
                chunk = await asyncio.wait_for(reader.read(4096), RESEND_S)
                if not chunk:
                    raise ConnectionResetError("closed by the gateway")
                buf += chunk
                confirmed = any(s.serial == serial for s in w.split(buf) if s.command == 3)
            counter.total += 1
            if counter.counting:
                counter.confirmed += 1
                counter.latencies.append(time.perf_counter() - sent)
    except (OSError, TimeoutError) as exc:
        counter.failed += 1
        print(f"device {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        counter.open -= 1
        writer.close()


async def drive(n: int, port: int, duration: float, pid: int) -> tuple[Counter, float, float]:
    """(counter, window seconds, gateway CPU seconds in the window)."""
    counter = Counter()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(device(i, port, counter, stop)) for i in range(n)]
    await asyncio.sleep(WARMUP_S)
    counter.counting = True
    t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
    await asyncio.sleep(duration)
    counter.counting = False
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    held = counter.open
    stop.set()
    await asyncio.gather(*tasks)
    counter.open = held
    return counter, elapsed, cpu


def run(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(24)
    with scratch_database(args.database_url) as dsn:
        migrate(dsn)
        api_port, gw_port = free_port(), free_port()
        env = dict(
            os.environ,
            FIRESAFE_DATABASE_URL=dsn,
            FIRESAFE_MQTT_URL=args.mqtt_url,
            FIRESAFE_ADMIN_TOKEN=token,
            FIRESAFE_API_PORT=str(api_port),
            FIRESAFE_API_URL=f"http://127.0.0.1:{api_port}",
            FIRESAFE_MQTT_CLIENT_ID=f"bench-ingest-{secrets.token_hex(4)}",
            FIRESAFE_LOG_LEVEL="WARNING",
        )
        procs = [child(["api"], env)]
        try:
            wait_port(api_port)
            registry = [
                {
                    "id": f"BU{i}",
                    "site": f"BS{i % 50}",
                    "building": "B1",
                    "floor": "1",
                    "zone": "Z",
                    "kind": "uitd",
                    "address": (0x3000_0000 + i).to_bytes(6, "big").hex().upper(),
                }
                for i in range(args.connections)
            ]
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
                r = api.post(f"http://127.0.0.1:{api_port}/api/v1/devices", json=registry)
                r.raise_for_status()
            if not args.no_ingest:
                procs.append(child(["ingest"], env))
            gateway = child(
                ["gateway", "gb26875", "--listen", f"127.0.0.1:{gw_port}"], env, args.profile
            )
            procs.append(gateway)
            wait_port(gw_port)
            counter, elapsed, cpu = asyncio.run(
                drive(args.connections, gw_port, args.duration, gateway.pid)
            )
            fps = counter.confirmed / elapsed
            lat = sorted(counter.latencies) or [0.0]
            print(f"connections held: {counter.open} of {args.connections} "
                  f"({counter.failed} failed)")  # fmt: skip
            print(f"confirmed frames: {counter.confirmed:,} in {elapsed:.1f} s = {fps:,.0f}/s "
                  f"= {fps / TARGET_FPS:.2f} x the target of {TARGET_FPS:,}/s")  # fmt: skip
            print(f"confirm latency: p50 {statistics.median(lat) * 1000:.1f} ms, "
                  f"p99 {lat[int(0.99 * (len(lat) - 1))] * 1000:.1f} ms")  # fmt: skip
            per_frame = cpu / max(counter.confirmed, 1)
            print(f"gateway CPU in the window: {cpu:.2f} s = {per_frame * 1e6:.0f} us per frame; "
                  f"one core's worth: {1 / per_frame:,.0f} frames/s = "
                  f"{1 / per_frame / TARGET_FPS:.2f} x the target")  # fmt: skip
            if not args.no_ingest:
                t0 = time.monotonic()
                with psycopg.connect(dsn, autocommit=True) as conn:
                    stored = 0
                    while time.monotonic() - t0 < 120:
                        row = conn.execute("SELECT count(*) FROM device_events").fetchone()
                        stored = int(row[0]) if row else 0
                        if stored >= counter.total:
                            break
                        time.sleep(0.5)
                print(f"ingest: {stored:,} events stored for {counter.total:,} frames confirmed, "
                      f"{time.monotonic() - t0:.1f} s after the devices stopped")  # fmt: skip
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGINT if p is procs[-1] else signal.SIGTERM)
            for p in procs:
                p.wait(30)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("FIRESAFE_DATABASE_URL"))
    parser.add_argument("--mqtt-url", default=os.environ.get("FIRESAFE_MQTT_URL"))
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--no-ingest", action="store_true", help="gateway and broker only")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the gateway into FILE")
    args = parser.parse_args()
    if not args.database_url or not args.mqtt_url:
        parser.error("--database-url and --mqtt-url (or FIRESAFE_DATABASE_URL/_MQTT_URL)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
