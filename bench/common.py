"""Shared helpers of the benchmarks: scratch databases, COPY registration, CPU meters.

Nothing here is imported by the product; it only reads the schema the
migrations create.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import conninfo as pg_conninfo
from psycopg import sql
from psycopg.types.json import Jsonb

log = logging.getLogger("bench")

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def with_dbname(url: str, dbname: str) -> str:
    return pg_conninfo.make_conninfo(url, dbname=dbname)


@contextmanager
def scratch_database(server_url: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh `firesafe_bench_<random>` database on the server, dropped at the end."""
    name = f"firesafe_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(server_url, name)
    finally:
        if keep:
            log.warning("kept database %s", name)
        else:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def register_copy(dsn: str, devices: Sequence[Mapping[str, Any]]) -> None:
    """What `tests.helpers.register` does, with one COPY per registry table.

    For an empty registry only (no upsert); 10,000 devices take well under a second.
    """
    sites = sorted({d["site"] for d in devices})
    buildings = sorted({(d["site"], d["building"]) for d in devices})
    floors = sorted({(d["site"], d["building"], d["floor"]) for d in devices})
    zones = sorted({(d["site"], d["building"], d["floor"], d["zone"]) for d in devices})
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY sites (id) FROM STDIN") as copy:
            for s in sites:
                copy.write_row((s,))
        with cur.copy("COPY buildings (site_id, building) FROM STDIN") as copy:
            for building in buildings:
                copy.write_row(building)
        with cur.copy("COPY floors (site_id, building, floor) FROM STDIN") as copy:
            for floor in floors:
                copy.write_row(floor)
        with cur.copy("COPY zones (site_id, building, floor, zone) FROM STDIN") as copy:
            for zone in zones:
                copy.write_row(zone)
        with cur.copy(
            "COPY devices (id, site_id, building, floor, zone, kind, interval_s, thresholds, "
            "routes) FROM STDIN"
        ) as copy:
            for d in devices:
                copy.write_row(
                    (
                        d["id"],
                        d["site"],
                        d["building"],
                        d["floor"],
                        d["zone"],
                        d["kind"],
                        d.get("interval_s"),
                        Jsonb(d.get("thresholds", {})),
                        Jsonb(d["routes"]) if d.get("routes") else None,
                    )
                )


def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop a persistent session (and the messages queued for it) from the broker."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    with contextlib.suppress(OSError):
        client.connect(host, port)
        client.loop_start()
        for _ in range(50):
            if client.is_connected():
                break
            time.sleep(0.02)
        client.disconnect()
        client.loop_stop()


class BufferedClient(paho.Client):
    """paho with buffered socket I/O, for publishing and consuming in bulk.

    - Reads: paho reads a packet header one byte per recv(); here those reads
      are served from a 256 KiB buffer (the trick ingest/mqtt.py uses, kept
      separate so the bench does not depend on the product's internals), so a
      burst of PUBACKs costs one recv().
    - Writes (once `buffer_writes` is set): each packet paho writes is appended
      to a buffer that `flush()` sends in large chunks, instead of one send()
      per message; the socket-pair wake-up paho writes per message for a
      threaded loop is dropped (there is no loop thread here).
    """

    _rbuf = b""
    _rpos = 0
    buffer_writes = False

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            self._rbuf = super()._sock_recv(256 * 1024)  # BlockingIOError passes through
            self._rpos = 0
            if not self._rbuf:
                return b""
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos = end
        return chunk

    def start_buffering(self) -> None:
        self._wbuf = bytearray()
        self.buffer_writes = True
        if self._sockpairW is not None:
            self._sockpairW.close()
            self._sockpairW = None

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if not self.buffer_writes:
            return super()._sock_send(buf)
        self._wbuf += buf
        if len(self._wbuf) >= 256 * 1024:
            self.flush()
        return len(buf)

    def flush(self) -> bool:
        """Send what is buffered; True when nothing is left."""
        if not self.buffer_writes:
            return True
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected")
        while self._wbuf:
            try:
                sent = sock.send(self._wbuf)
            except BlockingIOError:
                return False
            del self._wbuf[:sent]
        return True

    @property
    def outstanding(self) -> int:
        """QoS 1 messages published and not yet acknowledged (paho's own table)."""
        return len(self._out_messages)


# ------------------------------------------------------------------ CPU meters
def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def pids_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().strip() == name.encode():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def postgres_pids(dbname: str) -> list[int]:
    """PostgreSQL processes working for `dbname`: its backends and the server's own
    (checkpointer, WAL writer, ...); backends of other databases are left out."""
    found = []
    for pid in pids_named("postgres"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if f" {dbname} " in cmd or "(" not in cmd:
            found.append(pid)
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine used (every core), from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / _CLK_TCK


# A group of processes: its pids, or a callable returning them (evaluated at start and stop).
PidSpec: TypeAlias = Iterable[int] | Callable[[], Iterable[int]]


class CpuMeter:
    """CPU seconds used by named groups of processes between `start()` and `stop()`.

    Groups are lists of pids, or callables returning the pids (for PostgreSQL,
    whose backends come and go: a backend that exits before `stop()` is lost,
    so the figure for PostgreSQL is a lower bound).
    """

    def __init__(self, groups: Mapping[str, PidSpec]) -> None:
        self.groups = dict(groups)
        self._start: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    def _pids(self, group: str) -> Iterable[int]:
        spec = self.groups[group]
        return spec() if callable(spec) else spec

    def start(self) -> None:
        self._start = {g: {p: proc_cpu_seconds(p) for p in self._pids(g)} for g in self.groups}
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        for g in self.groups:
            before = self._start.get(g, {})
            total = 0.0
            for p in self._pids(g):
                total += max(0.0, proc_cpu_seconds(p) - before.get(p, 0.0))
            self.used[g] = total
        self.used["machine"] = machine_busy_seconds() - self._machine
        return self.used


def percentiles(values: Sequence[float], points: Sequence[float]) -> list[float | None]:
    if not values:
        return [None for _ in points]
    ordered = sorted(values)
    out: list[float | None] = []
    for p in points:
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        out.append(float(ordered[k]))
    return out


def fmt_int(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"
