"""Notification benchmark: call point activated over MQTT -> webhook's first attempt.

    .venv/bin/python bench/notify.py [--mqtt-url mqtt://127.0.0.1:1883] [--others 1000]

A scratch database on --server-url (dropped at the end), `firesafe ingest`
and `firesafe notify` as child processes, and webhook receivers in this
process. Each probe is a call point activated over MQTT; its latency runs
from the publish to the moment its webhook request reaches the receiver
(the first attempt). Probes run twice: with nothing else in flight, then
right after --others call points of another site were activated, whose
notifications go to --busy-targets slow receivers and one that always
answers 503 (so thousands of deliveries are in flight or being retried
while the probes are measured).

Target: p99 <= 1 s with 1,000 other alarms in flight. Printed as ratios:
loaded / idle, and p99 / target.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import register_copy, scratch_database
from firesafe.settings import MqttEndpoint
from storage.migrate import migrate

log = logging.getLogger("bench.notify")

TARGET_P99_S = 1.0
PROBE_SITE = "PROBE"
OTHER_SITE = "OTHER"
START_TIMEOUT_S = 60.0


class Receivers:
    """One HTTP server: /probe records arrival times per alarm device; /busy/<n>
    answers after a delay; /down always answers 503."""

    def __init__(self, slow_s: float) -> None:
        self.arrivals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                kind = self.path.split("/")[1]
                with receivers.lock:
                    receivers.counts[kind] = receivers.counts.get(kind, 0) + 1
                    if kind == "probe":
                        device = orjson.loads(body)["alarm"]["device"]
                        receivers.arrivals.setdefault(device, at)
                if kind == "busy":
                    time.sleep(slow_s)
                status = 503 if kind == "down" else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def configure(dsn: str, url: str, busy_targets: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notify_targets (id, kind, url, secret) VALUES ('probe', 'webhook', %s, "
            "'bench-secret')",
            (f"{url}/probe",),
        )
        conn.execute(
            "INSERT INTO notify_rules (id, sites, types) VALUES ('probe', %s, '{fire}')",
            ([PROBE_SITE],),
        )
        conn.execute(
            "INSERT INTO notify_rule_targets VALUES ('probe', 'probe', 'notify')",
        )
        conn.execute(
            "INSERT INTO notify_rules (id, sites, types) VALUES ('others', %s, '{fire}')",
            ([OTHER_SITE],),
        )
        for i in range(busy_targets):
            conn.execute(
                "INSERT INTO notify_targets (id, kind, url) VALUES (%s, 'webhook', %s)",
                (f"busy{i}", f"{url}/busy/{i}"),
            )
            conn.execute(
                "INSERT INTO notify_rule_targets VALUES ('others', %s, 'notify')", (f"busy{i}",)
            )
        conn.execute(
            "INSERT INTO notify_targets (id, kind, url) VALUES ('down', 'webhook', %s)",
            (f"{url}/down",),
        )
        conn.execute("INSERT INTO notify_rule_targets VALUES ('others', 'down', 'notify')")


def devices(site: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{site}-MCP{i:05d}",
            "site": site,
            "building": "B1",
            "floor": str(i // 100),
            "zone": f"Z{i % 10}",
            "kind": "mcp",
        }
        for i in range(n)
    ]


@contextlib.contextmanager
def child(command: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firesafe.cli", command], env=env, stdin=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Publisher:
    def __init__(self, url: str) -> None:
        ep = MqttEndpoint.parse(url)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-notify-{os.getpid()}"
        )
        self.client.max_inflight_messages_set(1000)
        ep.sign_in(self.client)
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()

    def activate(self, site: str, device: str, seq: int) -> float:
        payload = orjson.dumps({"ts": int(time.time() * 1000), "seq": seq, "type": "activated"})
        sent = time.time()
        self.client.publish(f"fs/v1/{site}/{device}/event", payload, qos=1)
        return sent

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def probe(
    pub: Publisher, rx: Receivers, ids: list[str], spacing_s: float, timeout: float
) -> tuple[list[float], dict[str, float]]:
    sent: dict[str, float] = {}
    for device in ids:
        sent[device] = pub.activate(PROBE_SITE, device, 1)
        time.sleep(spacing_s)
    wait_until(lambda: all(d in rx.arrivals for d in ids), timeout, "every probe's webhook")
    return [rx.arrivals[d] - sent[d] for d in ids], sent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def alarms(dsn: str, site: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM alarms WHERE site_id = %s", (site,)).fetchone()
    return int(row[0]) if row else 0


def split(dsn: str, ids: list[str], sent: dict[str, float]) -> tuple[list[float], list[float]]:
    """Per probe: publish -> outbox row committed (ingest), outbox row -> first attempt."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.alarm->>'device', extract(epoch FROM n.created_at), "
            "extract(epoch FROM n.first_attempt_at) FROM notifications n "
            "WHERE n.target_id = 'probe' AND n.alarm->>'device' = ANY(%s)",
            (ids,),
        ).fetchall()
    ingest = [float(created) - sent[d] for d, created, _ in rows]
    notifier = [float(first) - float(created) for _, created, first in rows]
    return ingest, notifier


def pending(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM notifications WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0


def run(args: argparse.Namespace) -> int:
    with scratch_database(args.server_url) as dsn:
        migrate(dsn)
        probes = devices(PROBE_SITE, 2 * args.probes + 1)
        register_copy(dsn, probes + devices(OTHER_SITE, args.others))
        rx = Receivers(args.slow_ms / 1000)
        configure(dsn, rx.url, args.busy_targets)
        env = dict(
            os.environ,
            FIRESAFE_DATABASE_URL=dsn,
            FIRESAFE_MQTT_URL=args.mqtt_url,
            FIRESAFE_MQTT_CLIENT_ID=f"bench-notify-ingest-{os.getpid()}",
            FIRESAFE_LOG_LEVEL="WARNING",
        )
        pub = Publisher(args.mqtt_url)
        try:
            notify_env = dict(env, FIRESAFE_LOG_LEVEL=args.notify_log_level)
            with child("ingest", env), child("notify", notify_env):
                # Warm-up: the first probe waits for ingest's subscription and the notifier.
                first = probes[0]["id"]
                deadline = time.monotonic() + START_TIMEOUT_S
                while first not in rx.arrivals and time.monotonic() < deadline:
                    pub.activate(PROBE_SITE, first, int(time.monotonic() * 1000) % 2**31)
                    time.sleep(1.0)
                wait_until(lambda: first in rx.arrivals, 1, "warm-up")
                ids = [d["id"] for d in probes[1:]]
                idle, idle_sent = probe(pub, rx, ids[: args.probes], args.spacing_ms / 1000, 30)
                for i, d in enumerate(devices(OTHER_SITE, args.others)):
                    pub.activate(OTHER_SITE, d["id"], i + 1)
                # Ingest writes the other alarms first (its own backlog is not what is
                # measured here); their notifications are then in flight during the probes.
                wait_until(lambda: alarms(dsn, OTHER_SITE) >= args.others, 120, "other alarms")
                backlog_before = pending(dsn)
                loaded, loaded_sent = probe(pub, rx, ids[args.probes :], args.spacing_ms / 1000, 60)
                backlog_after = pending(dsn)
            parts = {
                "idle": split(dsn, ids[: args.probes], idle_sent),
                "loaded": split(dsn, ids[args.probes :], loaded_sent),
            }
        finally:
            pub.close()
            rx.close()
    report(args, idle, loaded, parts, backlog_before, backlog_after, dict(rx.counts))
    return 0 if pct(loaded, 0.99) <= TARGET_P99_S else 1


def report(
    args: argparse.Namespace,
    idle: list[float],
    loaded: list[float],
    parts: dict[str, tuple[list[float], list[float]]],
    backlog_before: int,
    backlog_after: int,
    counts: dict[str, int],
) -> None:
    def row(name: str, values: list[float]) -> str:
        return (
            f"| {name} | {len(values)} | {statistics.median(values) * 1000:.0f} | "
            f"{pct(values, 0.99) * 1000:.0f} | {max(values) * 1000:.0f} |"
        )

    print(f"\ncall point activated over MQTT -> webhook first attempt ({args.probes} probes each)")
    print("| phase | probes | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(row("nothing else in flight", idle))
    print(row(f"{args.others} other alarms in flight", loaded))
    for phase, (ingest, notifier) in parts.items():
        print(row(f"  {phase}: publish -> outbox row (ingest)", ingest))
        print(row(f"  {phase}: outbox row -> first attempt (notifier)", notifier))
    print(
        f"\nother alarms' notifications pending while probing: {backlog_before} -> "
        f"{backlog_after} ({args.busy_targets} receivers answering in {args.slow_ms} ms, "
        f"one answering 503); requests received: {counts}"
    )
    p99 = pct(loaded, 0.99)
    print(f"loaded / idle p99: {p99 / pct(idle, 0.99):.2f}x")
    print(
        f"p99 / target ({TARGET_P99_S:.0f} s): {p99 / TARGET_P99_S:.2f} -> "
        f"{'met' if p99 <= TARGET_P99_S else 'MISSED'}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--server-url",
        default=os.environ.get(
            "FIRESAFE_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument(
        "--mqtt-url", default=os.environ.get("FIRESAFE_BENCH_MQTT_URL", "mqtt://127.0.0.1:1883")
    )
    p.add_argument("--others", type=int, default=1000, help="other alarms in flight")
    p.add_argument("--busy-targets", type=int, default=4, help="slow receivers of the others")
    p.add_argument("--slow-ms", type=int, default=200, help="their answer time")
    p.add_argument("--probes", type=int, default=30, help="probes per phase")
    p.add_argument("--spacing-ms", type=int, default=100, help="between probes")
    p.add_argument("--notify-log-level", default="ERROR", help="of the notifier child")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
