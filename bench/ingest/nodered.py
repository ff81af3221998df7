"""The `nodered` consumer: Node-RED with a PostgreSQL node, the low-code way.

A flow the bench writes: `mqtt in` (fs/v1/#, QoS 1, persistent session) ->
`function` (parse the payload, build one INSERT per message: a gateway batch
is one multi-row INSERT, like `naive`) -> `postgres`
(node-red-contrib-postgres-multi: a node-postgres pool, autocommit). No
registry, no checks, no de-duplication.

Node-RED is not a Python package: it is installed with the machine's npm into
a cache directory outside the repository (FIRESAFE_BENCH_NODE_RED_DIR, default
~/.cache/firesafe-bench/node-red) by `ensure_installed`, once; when npm or the
registry is missing the bench says so and skips this consumer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from firesafe.contract import READINGS

PACKAGES = ("node-red", "node-red-contrib-postgres-multi")
# The PostgreSQL node was written against node-postgres 7, which hangs on the
# Node.js of today (pg < 8.0.3 never completes a connection on Node >= 14);
# its API (Pool, connect, query, release) is node-postgres 8's, so npm is told
# to use that.
PG_OVERRIDE = "^8.11.0"
DEFAULT_DIR = Path.home() / ".cache" / "firesafe-bench" / "node-red"
READY_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 900.0
COLUMNS = ["device_id", "ts", "seq", "received_ms", *READINGS]


def install_dir() -> Path:
    return Path(os.environ.get("FIRESAFE_BENCH_NODE_RED_DIR") or DEFAULT_DIR)


def red_js(where: Path) -> Path:
    return where / "node_modules" / "node-red" / "red.js"


def ensure_installed(where: Path | None = None) -> str | None:
    """Install Node-RED and the PostgreSQL node with npm if needed; None when ready,
    else why it cannot run (the bench prints it and skips the consumer)."""
    where = where or install_dir()
    pg_node = where / "node_modules" / PACKAGES[1] / "package.json"
    if red_js(where).exists() and pg_node.exists():
        return None
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node/npm not on PATH: Node-RED skipped"
    where.mkdir(parents=True, exist_ok=True)
    manifest = where / "package.json"
    meta: dict[str, Any] = {"name": "firesafe-bench-node-red", "private": True}
    if manifest.exists():
        meta = json.loads(manifest.read_text())
    meta["overrides"] = {"pg": PG_OVERRIDE}
    manifest.write_text(json.dumps(meta, indent=2) + "\n")
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", *PACKAGES],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install {' '.join(PACKAGES)} failed ({exc}): Node-RED skipped"
    if proc.returncode != 0 or not red_js(where).exists() or not pg_node.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"npm install {' '.join(PACKAGES)} failed: {' / '.join(tail)}: Node-RED skipped"
    return None


# The function node: one INSERT per message, named parameters (node-postgres-named).
FUNCTION = """
const parts = msg.topic.split("/");
const what = parts[parts.length - 1];
let obj;
try { obj = JSON.parse(msg.payload); } catch (e) { return null; }
const rows = [];
if (what === "telemetry") {
    rows.push([parts[3], obj.ts, obj.seq, obj.v || {}]);
} else if (what === "batch") {
    for (const r of obj.readings) rows.push([r.device, r.ts, r.seq, r.v || {}]);
} else {
    return null;
}
const received = Date.now();
const params = {};
const values = [];
rows.forEach((r, i) => {
    const names = [];
    const put = (name, value) => { params[name] = value; names.push("$" + name); };
    put("d" + i, r[0]);
    put("t" + i, r[1]);
    put("s" + i, r[2]);
    put("m" + i, received);
    READINGS.forEach((n, j) => put("v" + i + "_" + j, r[3][n] === undefined ? null : r[3][n]));
    values.push("(" + names.join(",") + ")");
});
msg.payload = [{
    query: "INSERT INTO " + TABLE + " (" + COLUMNS.join(",") + ") VALUES " + values.join(","),
    params: params,
}];
return msg;
"""


def flow(
    *, mqtt_host: str, mqtt_port: int, client_id: str, dsn: str, table: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The flow (flows.json) and its credentials (flows_cred.json: credentialSecret false)."""
    db = conninfo_to_dict(dsn)
    prelude = (
        f"const READINGS = {json.dumps(list(READINGS))};\n"
        f"const COLUMNS = {json.dumps(COLUMNS)};\n"
        f"const TABLE = {json.dumps(table)};\n"
    )
    nodes: list[dict[str, Any]] = [
        {"id": "tab", "type": "tab", "label": "firesafe bench"},
        {
            "id": "broker",
            "type": "mqtt-broker",
            "name": "bench broker",
            "broker": mqtt_host,
            "port": str(mqtt_port),
            "clientid": client_id,
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": False,
            "autoUnsubscribe": False,
        },
        {
            "id": "pgdb",
            "type": "postgresdb",
            "hostname": str(db.get("host") or "127.0.0.1"),
            "port": int(db.get("port") or 5432),
            "db": str(db.get("dbname") or "postgres"),
            "ssl": False,
        },
        {
            "id": "in",
            "type": "mqtt in",
            "z": "tab",
            "name": "telemetry and batches",
            "topic": "fs/v1/#",
            "qos": "1",
            "datatype": "utf8",
            "broker": "broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [["insert"]],
        },
        {
            "id": "insert",
            "type": "function",
            "z": "tab",
            "name": "build INSERT",
            "func": prelude + FUNCTION,
            "outputs": 1,
            "wires": [["pg"]],
        },
        {
            "id": "pg",
            "type": "postgres",
            "z": "tab",
            "postgresdb": "pgdb",
            "name": "store",
            "output": False,
            "outputs": 0,
            "wires": [],
        },
    ]
    creds = {
        "pgdb": {"user": str(db.get("user") or "postgres"), "password": db.get("password") or ""}
    }
    return nodes, creds


SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: 0,
    httpAdminRoot: false,
    httpNodeRoot: false,
    credentialSecret: false,
    flowFilePretty: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
};
"""


def start(
    host: str, port: int, dsn: str, client_id: str, table: str
) -> tuple[Callable[[], None], int]:
    """Run Node-RED headless on a generated flow; (stop, pid) once its MQTT client is connected."""
    where = install_dir()
    why = ensure_installed(where)
    if why:
        raise RuntimeError(why)
    work = Path(tempfile.mkdtemp(prefix="bench-nodered-"))
    nodes, creds = flow(mqtt_host=host, mqtt_port=port, client_id=client_id, dsn=dsn, table=table)
    flows = work / "flows.json"
    flows.write_text(json.dumps(nodes))
    (work / "flows_cred.json").write_text(json.dumps(creds))
    settings = work / "settings.js"
    settings.write_text(SETTINGS)
    node = shutil.which("node") or "node"
    # node-postgres falls back to PGUSER/PGPASSWORD when the config node has none.
    env = {**os.environ, "PGUSER": creds["pgdb"]["user"], "PGPASSWORD": creds["pgdb"]["password"]}
    proc = subprocess.Popen(
        [
            node,
            str(red_js(where)),
            "--settings",
            str(settings),
            "--userDir",
            str(where),
            str(flows),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    connected = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            del lines[:-200]
            if "Connected to broker" in line:
                connected.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not connected.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError("Node-RED did not connect to the broker:\n" + "\n".join(lines[-20:]))
    time.sleep(1.0)  # the subscription follows the connection

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    return stop, proc.pid
