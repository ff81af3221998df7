"""Simulator speed: `firesafe sim --speed max` in gateway mode, as a subscriber sees it.

    .venv/bin/python -m bench.sim [--sites 100] [--devices-per-site 1000] [--duration 600]
                                  [--processes 2] [--gateway-fraction 1] [--quick]

Starts its own Mosquitto (the embedded broker's config), a trivial counting
subscriber in its own process (paho, MQTT 3.1.1, QoS 1 on the telemetry and
gateway batch topics, counting readings), then publishes the simulation with
the simulator's own runner (device_sim.runner.run_job, the code behind
`firesafe sim`) from --processes processes, as fast as they go. Prints the
simulator's rate over its publishing window (first publish to last PUBACK,
after building the estate) and the rate that reached the subscriber (first to
last reading received), with the CPU each side used. Target: >= 250,000
readings/s reaching the subscriber on the 2-core machine (issue 14).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from device_sim.runner import Job, run_job
from firesafe.embedded import EmbeddedBroker, free_port
from firesafe.settings import MqttEndpoint

TARGET_READINGS_S = 250_000
IDLE_S = 5.0  # the subscriber stops this long after the last reading


def subscriber_main(port: int, conn: Connection) -> None:
    """Count readings (a batch's `"device":` keys) until the stream has been quiet IDLE_S."""
    counts = {"messages": 0, "readings": 0}
    first = last = 0.0
    lock = threading.Lock()

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal first, last
        now = time.time()
        n = msg.payload.count(b'"device":') if msg.topic.endswith("/batch") else 1
        with lock:
            first = first or now
            last = now
            counts["messages"] += 1
            counts["readings"] += n

    subscribed = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-sim-count", protocol=paho.MQTTv311
    )
    client.max_inflight_messages_set(0)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(
        [("fs/v1/+/gateway/+/batch", 1), ("fs/v1/+/+/telemetry", 1)]
    )
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not subscribed.wait(15):
        conn.send(("error", "subscription not acknowledged"))
        return
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    conn.send(("ready", os.getpid()))
    conn.recv()  # the publishers are done: wait for the stream to go quiet
    done = time.time()
    while True:
        time.sleep(0.25)
        with lock:
            quiet = time.time() - (last or done) > IDLE_S
        if quiet:
            break
    client.disconnect()
    client.loop_stop()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    conn.send(("done", {**counts, "first": first, "last": last, "cpu": cpu}))


def cpu_of(pid: int) -> float:
    """CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", type=int, default=100)
    p.add_argument("--devices-per-site", type=int, default=1000)
    p.add_argument("--duration", type=float, default=600.0, help="event-time seconds")
    p.add_argument("--processes", type=int, default=2, help="publisher processes")
    p.add_argument("--gateway-fraction", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="20 sites, 120 s of event time")
    args = p.parse_args(argv)
    if args.quick:
        args.sites, args.duration = 20, 120.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("mosquitto"):
        print("mosquitto is not on PATH: this benchmark measures Mosquitto", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    broker = EmbeddedBroker(work / "mqtt", port=free_port())
    broker.start()
    assert broker.proc is not None
    assert broker.port is not None
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    sub = ctx.Process(target=subscriber_main, args=(broker.port, child), daemon=True)
    sub.start()
    try:
        status, value = parent.recv()
        if status != "ready":
            print(f"bench.sim: subscriber failed: {value}", file=sys.stderr)
            return 1
        job = Job(
            sites=args.sites,
            devices_per_site=args.devices_per_site,
            seed=1,
            scenarios=(),
            duration_s=args.duration,
            start_ms=int(time.time() * 1000) - round(args.duration * 1000),
            endpoint=MqttEndpoint.parse(f"mqtt://127.0.0.1:{broker.port}"),
            speed=None,
            gateway_fraction=args.gateway_fraction,
        )
        broker_cpu0 = cpu_of(broker.proc.pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall0 = time.time()
        totals = run_job(job, args.processes)
        wall = time.time() - wall0
        parent.send("publishers done")
        status, got = parent.recv()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        broker_cpu = cpu_of(broker.proc.pid) - broker_cpu0
    finally:
        sub.join(10)
        if sub.is_alive():
            sub.kill()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    # RUSAGE_CHILDREN: the publisher processes (joined), setup included.
    pub_cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    busy = totals.publish_s or wall
    span = max(1e-9, got["last"] - got["first"])
    print(
        f"simulator: {args.sites} sites x {args.devices_per_site} devices, "
        f"{args.duration:.0f} s of event time, gateway fraction {args.gateway_fraction:g}, "
        f"{args.processes} publisher processes, QoS 1; {os.cpu_count()} cores, load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    print(
        f"  published {totals.readings:,} readings in {totals.messages:,} messages, errors "
        f"{totals.errors}: {busy:.1f} s publishing ({wall:.1f} s with setup) -> "
        f"{totals.readings / busy:,.0f} readings/s, {totals.messages / busy:,.0f} msg/s"
    )
    print(
        f"  subscriber got {got['readings']:,} readings in {got['messages']:,} messages over "
        f"{span:.1f} s -> {got['readings'] / span:,.0f} readings/s"
    )
    n = max(1, totals.readings)
    print(
        f"  CPU s: publishers {pub_cpu:.1f} ({totals.cpu_ms / 1000:.1f} publishing, the rest "
        f"building the estate), broker {broker_cpu:.1f}, subscriber {got['cpu']:.1f}; per "
        f"reading: publishing {totals.cpu_ms * 1000 / n:.2f} us, broker "
        f"{broker_cpu * 1e6 / n:.2f} us, subscriber {got['cpu'] * 1e6 / n:.2f} us"
    )
    ok = got["readings"] == totals.readings and got["readings"] / span >= TARGET_READINGS_S
    print(
        f"{'PASS' if ok else 'FAIL'}  every reading reached the subscriber "
        f"({got['readings']:,} of {totals.readings:,}) at >= {TARGET_READINGS_S:,} readings/s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
