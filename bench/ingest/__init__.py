"""End-to-end ingest benchmark: first MQTT publish -> last committed row.

    .venv/bin/python -m bench.ingest [--messages N] [--devices D] [--quick]

One invocation starts its own Mosquitto (firesafe.embedded.EmbeddedBroker, the
tuned config ingest ships with: `max_inflight_messages 0`,
`max_queued_messages 1000000`; stock Mosquitto's `max_queued_messages 1000`
would drop any burst for every consumer) on a free port, creates a scratch
database `firesafe_bench_<random>` on --server-url, migrates it, registers
--devices devices (smoke, heat, multi, electrical, evac) with COPY, and drops
the database at the end.

Then, on the same 2-core-sized machine that also runs the broker, PostgreSQL
and the publishers:

0. publisher alone: the burst published with no subscriber, then with a
   trivial counting subscriber, so the report shows the publisher and the
   broker are not the bottleneck;
1. burst: --messages single-reading telemetry messages (QoS 1) from every
   device;
2. gateway: --gateway-readings readings in `fs/v1/{site}/gateway/{gw}/batch`
   messages of --batch readings;
2b. mixed: the burst with the real work in it: 1 message in 50 sent twice
   (duplicates: firesafe stores them once, the bare consumers twice), 1 in
   100 followed by a broken payload (a reject for firesafe, dropped by the
   bare ones), and 1 smoke detector in 20 at an alarm level (alarms opened
   and verified);
3. steady: --steady-rate msg/s for --steady-seconds, end-to-end latency
   publish -> commit.

Each scenario runs the consumers (consumers.py), one after the other, on the
same workload: naive (paho on_message -> one autocommitted INSERT per message,
on a capped slice), bare batched (paho -> queue -> COPY every 5,000 rows or
200 ms into a plain table), columnar (columnar.py: decoding into numpy columns
and one binary COPY per batch in a writer process), nodered (nodered.py:
Node-RED, mqtt in -> function building the INSERT -> its PostgreSQL node, on a
capped slice; installed with npm outside the repository, skipped when it
cannot be) and firesafe (the real ingest.service.IngestService in a child
process). Each consumer subscribes (fresh client id, persistent session)
before the publishers start; the benchmark counts rows in the database until
every expected row is there (or a stall timeout) and reports the rate, loss
and duplicates (a capped consumer is waited for after its cap, so loss and
duplicates are judged on every row).

Modules: workload.py (fleet, workloads, payloads), publishers.py, consumers.py,
columnar.py, nodered.py, runner.py (one run: consumer, publishers, counting),
report.py (table, verdicts, latency, py-spy summary), stats.py (--repeats),
cli.py (options, scenarios, the printed report).

Publishers are --publishers processes of paho (QoS 1, pre-encoded payloads,
up to 50,000 in flight each). Targets are printed as PASS/FAIL lines.

--profile (on by default for full runs) repeats the firesafe burst under
py-spy (`.venv/bin/pip install py-spy`) and prints the top functions.
"""
