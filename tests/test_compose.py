"""The production compose stack, checked without a Docker engine.

docker-compose.yml is parsed and held to its promises (images, mounts,
healthchecks, start order, profiles, secrets from .env.example); the
Dockerfile is multi-stage and runs unprivileged; the Mosquitto entrypoint,
config and ACL run for real when a `mosquitto` binary is installed; and
`docker-compose config -q` validates the file when that binary exists.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from firesafe.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
MOSQUITTO = ROOT / "deploy" / "mosquitto"
PLATFORM = ("migrate", "ingest", "api", "notify", "sim", "gb26875")
INFRA = ("timescaledb", "mosquitto", "grafana", "proxy")
# Profile `emqx`: a clustered broker for estates past one Mosquitto.
EMQX_NODES = ("emqx1", "emqx2")
EMQX = ROOT / "deploy" / "emqx"
# Runs once before the rest, from the platform's image: the TLS certificates.
INIT = ("certs",)
MAKE_ENV = ROOT / "deploy" / "make-env.sh"
MAKE_CERTS = ROOT / "deploy" / "tls" / "make-certs.sh"

Json = dict[str, Any]


def compose() -> Json:
    data: Json = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def services() -> dict[str, Json]:
    result: dict[str, Json] = compose()["services"]
    return result


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def environment(service: Json) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, please"
    return {key: str(value) for key, value in env.items()}


def healthcheck(service: Json) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test[1:]) if isinstance(test, list) else str(test)


def depends(service: Json) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_services_and_images() -> None:
    svc = services()
    assert set(svc) == set(PLATFORM) | set(INFRA) | set(INIT) | set(EMQX_NODES)
    for name in EMQX_NODES:
        assert re.fullmatch(r"emqx/emqx:5\.\d+\.\d+", svc[name]["image"])
    assert re.fullmatch(r"timescale/timescaledb:2\.\d+\.\d+-pg17", svc["timescaledb"]["image"])
    assert svc["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert re.fullmatch(r"grafana/grafana(-oss)?:\d+\.\d+\.\d+", svc["grafana"]["image"])
    assert re.fullmatch(r"caddy:2\.\d+\.\d+", svc["proxy"]["image"])
    images = {svc[name]["image"] for name in PLATFORM + INIT}
    assert len(images) == 1, "the platform services share one image"
    for name in PLATFORM + INIT:
        assert svc[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_platform_commands_and_settings() -> None:
    svc = services()
    assert svc["migrate"]["command"] == ["db", "migrate"]
    assert svc["migrate"]["restart"] == "no", "migrate runs once"
    assert svc["ingest"]["command"] == ["ingest"]
    assert svc["api"]["command"] == ["api"]
    assert svc["notify"]["command"] == ["notify"]
    assert svc["sim"]["command"][0] == "sim"
    settings_fields = set(Settings.model_fields)
    for name in PLATFORM:
        env = environment(svc[name])
        for key in env:
            if key.startswith("FIRESAFE_"):
                assert key.removeprefix("FIRESAFE_").lower() in settings_fields, key
    # Least privilege: the owner migrates; ingest and the API log in as their
    # own roles (deploy/postgres/20-roles.sh); every link asks for TLS.
    logins = {"migrate": "firesafe:${POSTGRES_PASSWORD", "ingest": "ingest:${INGEST_DB_PASSWORD"}
    logins["api"] = "api:${API_DB_PASSWORD"
    logins["notify"] = "api:${API_DB_PASSWORD"  # the API's role: targets and deliveries
    for name, login in logins.items():
        url = environment(svc[name])["FIRESAFE_DATABASE_URL"]
        assert url.startswith(f"postgresql://{login}"), name
        assert url.endswith("@timescaledb:5432/firesafe?sslmode=require"), name
    assert environment(svc["grafana"])["FIRESAFE_GRAFANA_DB_SSLMODE"] == "require"
    assert environment(svc["ingest"])["FIRESAFE_MQTT_URL"].startswith("mqtt://firesafe:")
    assert environment(svc["ingest"])["FIRESAFE_MQTT_URL"].endswith(
        "@${FIRESAFE_MQTT_BROKER:-mosquitto}:1883"
    )
    api = environment(svc["api"])
    assert api["FIRESAFE_API_HOST"] == "0.0.0.0"
    assert api["FIRESAFE_API_PORT"] == "8000"
    assert api["FIRESAFE_ADMIN_TOKEN"].startswith("${FIRESAFE_ADMIN_TOKEN")
    assert "FIRESAFE_API_PUBLIC_DOCS" not in api, "the schema needs a token in production"
    # Nothing plain is published on the host: MQTT over TLS, HTTPS through the proxy.
    assert "ports" not in svc["api"]
    assert "ports" not in svc["grafana"]
    assert svc["mosquitto"]["ports"] == ["${MQTT_TLS_PORT:-8883}:8883"]
    assert svc["proxy"]["ports"] == ["${API_TLS_PORT:-8443}:8443", "${GRAFANA_TLS_PORT:-3443}:3443"]
    # The one exception, opt-in (profile gb26875): GB/T 26875.3 has no TLS.
    assert svc["gb26875"]["ports"] == ["${GB26875_PORT:-9026}:9026"]
    for name, service in svc.items():
        for port in service.get("ports", []):
            if name != "gb26875":
                assert port.endswith(("8883", "8443", "3443")), f"{name} publishes {port}"
    sim = environment(svc["sim"])
    assert sim["FIRESAFE_API_URL"] == "http://api:8000"
    assert sim["FIRESAFE_MQTT_URL"].startswith("mqtt://sim:")
    assert "FIRESAFE_DATABASE_URL" not in sim, "the simulator needs no database"
    gb = environment(svc["gb26875"])
    assert svc["gb26875"]["command"] == ["gateway", "gb26875", "--listen", "0.0.0.0:9026"]
    assert gb["FIRESAFE_MQTT_URL"].startswith("mqtt://gb26875:${MQTT_GB26875_PASSWORD")
    assert gb["FIRESAFE_GATEWAY_TOKEN"].startswith("${FIRESAFE_ADMIN_TOKEN")
    assert "FIRESAFE_DATABASE_URL" not in gb, "the gateway needs no database"


def test_healthchecks() -> None:
    svc = services()
    assert "pg_isready" in healthcheck(svc["timescaledb"])
    mosquitto = healthcheck(svc["mosquitto"])
    assert "mosquitto_sub" in mosquitto
    assert "$$SYS/" in mosquitto, "compose needs $$ for a literal $"
    assert "-u healthcheck" in mosquitto
    assert "/api/health" in healthcheck(svc["grafana"])
    assert "/health" in healthcheck(svc["api"])
    for name in ("timescaledb", "mosquitto", "grafana", "api"):
        spec = svc[name]["healthcheck"]
        assert spec["test"][0] in ("CMD", "CMD-SHELL")
        assert spec["interval"]
        assert spec["retries"] >= 3


def test_start_order() -> None:
    svc = services()
    assert depends(svc["certs"]) == {}
    assert svc["certs"]["restart"] == "no"
    assert depends(svc["timescaledb"]) == {"certs": "service_completed_successfully"}
    assert depends(svc["mosquitto"]) == {"certs": "service_completed_successfully"}
    assert depends(svc["proxy"])["certs"] == "service_completed_successfully"
    assert set(depends(svc["proxy"])) == {"certs", "api", "grafana"}
    assert depends(svc["migrate"]) == {"timescaledb": "service_healthy"}
    assert depends(svc["ingest"]) == {
        "migrate": "service_completed_successfully",
        "mosquitto": "service_healthy",
    }
    assert depends(svc["api"]) == {
        "migrate": "service_completed_successfully",
        "timescaledb": "service_healthy",
    }
    assert depends(svc["grafana"]) == {
        "migrate": "service_completed_successfully",
        "timescaledb": "service_healthy",
    }
    assert depends(svc["sim"])["api"] == "service_healthy"
    assert depends(svc["sim"])["mosquitto"] == "service_healthy"
    # Every dependency that waits for health has a healthcheck to wait on.
    for service in svc.values():
        for name, condition in depends(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in svc[name], name


def test_profiles() -> None:
    svc = services()
    assert svc["sim"]["profiles"] == ["sim"]
    assert svc["gb26875"]["profiles"] == ["gb26875"]
    for name in EMQX_NODES:
        assert svc[name]["profiles"] == ["emqx"]
    for name in set(svc) - {"sim", "gb26875", *EMQX_NODES}:
        assert "profiles" not in svc[name], f"{name} must start by default"


def test_ingest_runs_as_replicas_that_share_the_shards() -> None:
    """Several identical ingest containers (docs/scaling.md): nothing per replica."""
    svc = services()
    ingest = svc["ingest"]
    assert ingest["deploy"]["replicas"] == "${INGEST_REPLICAS:-2}"
    assert "container_name" not in ingest, "replicas cannot share a container name"
    env = environment(ingest)
    assert env["FIRESAFE_INGEST_MODE"] == "sharded"
    assert env["FIRESAFE_MQTT_CLIENT_ID"] == "firesafe-ingest", "one client id base for all"
    assert "ports" not in ingest
    assert environment(svc["api"])["FIRESAFE_API_WORKERS"] == "${FIRESAFE_API_WORKERS:-2}"


def emqx_rules() -> set[tuple[str, str, str]]:
    """(who, action, topic) of every allow rule of deploy/emqx/acl.conf; it ends
    with {deny, all}."""
    text = (EMQX / "acl.conf").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("%%")]
    assert lines[-1] == "{deny, all}."
    rules = set()
    for line in lines[:-1]:
        m = re.fullmatch(
            r'\{allow, (all|\{username, "([\w-]+)"\}), (publish|subscribe), \[(.*)\]\}\.', line
        )
        assert m, f"unexpected ACL line {line!r}"
        who = m[2] or "all"
        for topic in re.findall(r'"([^"]+)"', m[4]):
            rules.add((who, m[3], topic))
    return rules


def mosquitto_rules() -> set[tuple[str, str, str]]:
    """The same triples from deploy/mosquitto/acl (%u written as EMQX's ${username})."""
    rules = set()
    user = "all"
    for line in (MOSQUITTO / "acl").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            continue
        action = {"read": "subscribe", "write": "publish"}[words[1]]
        if words[0] == "pattern":
            rules.add(("all", action, words[2].replace("%u", "${username}")))
        else:
            assert words[0] == "topic"
            rules.add((user, action, words[2]))
    return rules


def test_emqx_enforces_the_same_acl_as_mosquitto() -> None:
    assert emqx_rules() == mosquitto_rules()
    # Only the platform may command devices.
    assert {who for who, action, topic in emqx_rules() if topic.endswith("/cmd")} >= {"firesafe"}
    assert {w for w, a, t in emqx_rules() if t.endswith("/cmd") and a == "publish"} == {"firesafe"}


def test_emqx_cluster_config() -> None:
    svc = services()
    conf = (EMQX / "emqx.conf").read_text(encoding="utf-8")
    names = [environment(svc[n])["EMQX_NODE__NAME"] for n in EMQX_NODES]
    seeds = re.search(r"seeds = \[(.*)\]", conf)
    assert seeds is not None
    assert re.findall(r'"([^"]+)"', seeds[1]) == names, "static seeds are the nodes"
    assert "discovery_strategy = static" in conf
    for name, node in zip(EMQX_NODES, names, strict=True):
        host = node.split("@", 1)[1]
        assert svc[name]["hostname"] == host
        assert "." in host, "EMQX node names need a fully qualified host"
        assert host in svc[name]["networks"]["default"]["aliases"]
        assert environment(svc[name])["EMQX_NODE__COOKIE"] == "${EMQX_COOKIE:-}"
        mounts = {target: source for source, target, _ in bind_mounts(svc[name])}
        assert mounts["/opt/emqx/etc/emqx.conf"] == "./deploy/emqx/emqx.conf"
        assert mounts["/firesafe/acl.conf"] == "./deploy/emqx/acl.conf"
        assert svc[name]["ports"][0].endswith(":8883"), "devices over TLS only"
    # Per-device accounts bootstrapped into the built-in database, ACL from the file.
    assert "backend = built_in_database" in conf
    assert "user_id_type = username" in conf
    assert 'bootstrap_file = "/opt/emqx/data/firesafe-accounts.csv"' in conf
    assert "bootstrap_type = plain" in conf
    assert 'path = "/opt/emqx/etc/firesafe-acl.conf"' in conf
    assert "no_match = deny" in conf
    assert "max_mqueue_len = 1000000" in conf


def run_emqx_entrypoint(
    work: Path, tls: Path, accounts: str, **env: str
) -> subprocess.CompletedProcess[str]:
    (work / "accounts").mkdir(exist_ok=True)
    (work / "accounts" / "site.passwd").write_text(accounts, encoding="utf-8")
    for sub in ("data", "etc"):
        (work / sub).mkdir(exist_ok=True)
    clean = {
        "PATH": os.environ["PATH"],
        "EMQX_DATA_DIR": str(work / "data"),
        "EMQX_ETC_DIR": str(work / "etc"),
        "FIRESAFE_ACL": str(EMQX / "acl.conf"),
        "MQTT_ACCOUNTS": str(work / "accounts"),
        "MQTT_TLS": str(tls),
        "EMQX_PREPARE_ONLY": "1",
        "EMQX_NODE__COOKIE": "c" * 48,
        "MQTT_PLATFORM_PASSWORD": "p" * 48,
        "MQTT_HEALTHCHECK_PASSWORD": "h" * 48,
        **env,
    }
    return subprocess.run(
        ["sh", str(EMQX / "entrypoint.sh")],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_emqx_entrypoint_bootstraps_the_same_accounts(tmp_path: Path, tls_dir: Path) -> None:
    device = "S7/S7-B1-SD01:" + "d" * 32 + "\n# a comment\nS7/gateway/GW-A:" + "g" * 32 + "\n"
    done = run_emqx_entrypoint(tmp_path, tls_dir, device)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "data" / "firesafe-accounts.csv").read_text().splitlines()
    assert rows == [
        "user_id,password,is_superuser",
        "firesafe," + "p" * 48 + ",false",
        "healthcheck," + "h" * 48 + ",false",
        "S7/S7-B1-SD01," + "d" * 32 + ",false",
        "S7/gateway/GW-A," + "g" * 32 + ",false",
    ], "nobody is a superuser: the ACL applies to the platform too"
    assert (tmp_path / "data" / "firesafe-accounts.csv").stat().st_mode & 0o077 == 0
    assert (tmp_path / "etc" / "firesafe-acl.conf").read_text() == (EMQX / "acl.conf").read_text()
    assert (tmp_path / "data" / "firesafe-tls" / "server.key").exists()
    with_sim = run_emqx_entrypoint(tmp_path, tls_dir, "", MQTT_SIM_PASSWORD="s" * 48)
    assert with_sim.returncode == 0, with_sim.stderr
    assert "sim," + "s" * 48 + ",false" in (tmp_path / "data" / "firesafe-accounts.csv").read_text()


@pytest.mark.parametrize(
    ("accounts", "env", "message"),
    [
        ("S7/+:" + "d" * 32 + "\n", {}, "bad device id"),
        ("S7:" + "d" * 32 + "\n", {}, "bad account name"),
        ("S7/D1:short\n", {}, "shorter than"),
        ("S7/D1:" + "d" * 30 + ",x\n", {}, "letters, digits"),
        ("", {"EMQX_NODE__COOKIE": ""}, "EMQX_COOKIE"),
        ("", {"MQTT_PLATFORM_PASSWORD": "change-me-" + "x" * 20}, "change-me"),
    ],
)
def test_emqx_entrypoint_refuses_what_mosquittos_refuses(
    tmp_path: Path, tls_dir: Path, accounts: str, env: dict[str, str], message: str
) -> None:
    done = run_emqx_entrypoint(tmp_path, tls_dir, accounts, **env)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (tmp_path / "data" / "firesafe-accounts.csv").exists()


def bind_mounts(service: Json) -> list[tuple[str, str, str]]:
    out = []
    for entry in service.get("volumes", []):
        match = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", entry)
        assert match, f"volume {entry!r} in short syntax, please"
        if match[1].startswith((".", "/", "$")):
            out.append((match[1], match[2], match[3] or "rw"))
    return out


def test_mounts_and_volumes() -> None:
    data = compose()
    svc = data["services"]
    for name, service in svc.items():
        for source, target, mode in bind_mounts(service):
            assert mode == "ro", f"{name}: bind mount {source} should be read-only"
            local = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", source)
            assert (ROOT / local).exists(), f"{name}: {source} does not exist"
            assert target.startswith("/")
    grafana = {target: source for source, target, _ in bind_mounts(svc["grafana"])}
    assert grafana["/etc/grafana/provisioning"] == "./grafana/provisioning"
    providers = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/firesafe.yaml").read_text(encoding="utf-8")
    )["providers"]
    mount = next(t for t, s in grafana.items() if s == "./grafana/dashboards")
    for provider in providers:
        # One provider per language, each reading its subfolder of the mounted directory.
        path = Path(provider["options"]["path"])
        assert path.parent == Path(mount), provider
        assert (ROOT / "grafana/dashboards" / path.name).is_dir(), provider
    home = environment(svc["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana/dashboards" / Path(home).relative_to(mount)).exists()
    assert home.startswith(providers[0]["options"]["path"] + "/")

    named = set(data["volumes"])
    assert named == {
        "timescaledb-data",
        "mosquitto-data",
        "grafana-data",
        "tls",
        *(f"{node}-data" for node in EMQX_NODES),
    }
    used = {
        entry.split(":")[0]
        for service in svc.values()
        for entry in service.get("volumes", [])
        if not entry.startswith((".", "/", "$"))
    }
    assert used == named
    assert "timescaledb-data:/var/lib/postgresql/data" in svc["timescaledb"]["volumes"]
    assert "grafana-data:/var/lib/grafana" in svc["grafana"]["volumes"]
    assert "mosquitto-data:/mosquitto/data" in svc["mosquitto"]["volumes"]


def test_grafana_datasource_env_is_provided() -> None:
    text = (ROOT / "grafana/provisioning/datasources/firesafe.yaml").read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    wanted = set(re.findall(r"\$__env\{(\w+)\}", text)) | set(re.findall(r"\$\{(\w+)\}", text))
    assert wanted, "the datasource takes its settings from the environment"
    env = environment(services()["grafana"])
    assert wanted <= set(env), f"missing in grafana's environment: {wanted - set(env)}"
    assert (
        env["FIRESAFE_GRAFANA_DB_USER"] == environment(services()["timescaledb"])["GRAFANA_DB_USER"]
    )


def secrets() -> set[str]:
    return {
        "POSTGRES_PASSWORD",
        "INGEST_DB_PASSWORD",
        "API_DB_PASSWORD",
        "GRAFANA_DB_PASSWORD",
        "MQTT_PLATFORM_PASSWORD",
        "MQTT_HEALTHCHECK_PASSWORD",
        "MQTT_SIM_PASSWORD",
        "FIRESAFE_ADMIN_TOKEN",
        "GF_SECURITY_ADMIN_PASSWORD",
    }


def make_env(*args: str) -> dict[str, str]:
    done = subprocess.run(
        ["sh", str(MAKE_ENV), *args], capture_output=True, text=True, check=True, timeout=30
    )
    values = {}
    for line in done.stdout.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_make_env_fills_every_secret_strongly() -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    first, second = make_env(), make_env("--with-sim")
    assert set(first) == set(env_example())
    for name in secrets() - {"MQTT_SIM_PASSWORD"}:
        assert re.fullmatch(r"[0-9a-f]{48,}", first[name]), name
        assert first[name] != second[name], "random, not fixed"
    assert first["MQTT_SIM_PASSWORD"] == "", "no simulator account unless asked"
    assert re.fullmatch(r"[0-9a-f]{48}", second["MQTT_SIM_PASSWORD"])
    # The platform accepts the generated admin token.
    Settings(admin_token=first["FIRESAFE_ADMIN_TOKEN"])  # type: ignore[arg-type]


def test_every_variable_is_in_env_example() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = env_example()
    assert used, "no variables?"
    assert used <= set(example), f"missing in .env.example: {sorted(used - set(example))}"
    assert secrets() <= used
    for name in secrets():
        # Empty: compose refuses to start with .env.example copied as is.
        assert example[name] == "", f"{name}: must be empty in .env.example, not a value"
        # Required: compose refuses to start without it.
        assert re.search(rf"\$\{{{name}:\?", text) or name == "MQTT_SIM_PASSWORD"
    # The simulator's account can raise fires anywhere: never required, never on.
    assert not re.search(r"\$\{MQTT_SIM_PASSWORD:\?", text)
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for raw in DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_and_unprivileged() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = dockerfile_stages()
    assert len(stages) >= 2
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    assert base
    assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", base[1])
    build, final = stages[0], stages[-1]
    assert any(re.fullmatch(r"RUN pip install \.", line) for line in build)
    assert any(line.startswith("COPY --from=build ") for line in final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    final_text = "\n".join(final)
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in final_text, f"{tool} in the final image"
    assert 'ENTRYPOINT ["firesafe"]' in final
    assert "FIRESAFE_API_HOST=0.0.0.0" in final_text


def test_build_context_has_what_pip_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = " ".join(line for line in dockerfile_stages()[0] if line.startswith("COPY "))
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*")] == "*", ".dockerignore starts from nothing"
    for package in packages:
        assert re.search(rf"\bCOPY {package} \./{package}\b", copied), package
        assert f"!{package}/" in ignore, package
    readme = project["project"]["readme"]
    assert readme in copied
    assert f"!{readme}" in ignore
    assert "!.env" not in ignore
    assert not any(line.startswith("!.git") for line in ignore)


# --- Mosquitto ----------------------------------------------------------------------


def parse_acl() -> dict[str, list[tuple[str, str]]]:
    """username (or '%pattern') -> [(access, topic)]."""
    rules: dict[str, list[tuple[str, str]]] = {"%pattern": []}
    user = None
    for raw in (MOSQUITTO / "acl").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user":
            user = words[1]
            rules[user] = []
        elif words[0] == "pattern":
            rules["%pattern"].append((words[1], words[2]))
        elif words[0] == "topic":
            assert user, "topic rules outside a user block apply to anonymous clients"
            rules[user].append((words[1], words[2]))
    return rules


def test_acl_grants() -> None:
    rules = parse_acl()
    # Usernames carry the site ({site}/{device}, {site}/gateway/{gateway}):
    # no wildcard stands for a site in an account's own topics.
    assert set(rules["%pattern"]) == {
        ("write", "fs/v1/%u/telemetry"),
        ("write", "fs/v1/%u/event"),
        ("write", "fs/v1/%u/status"),
        ("read", "fs/v1/%u/cmd"),
        ("write", "fs/v1/%u/batch"),
    }
    assert set(rules["firesafe"]) == {("read", "fs/v1/#"), ("write", "fs/v1/+/+/cmd")}
    assert set(rules["healthcheck"]) == {("read", "$SYS/#")}
    # Only the platform writes commands.
    for user, grants in rules.items():
        for access, topic in grants:
            if access in ("write", "readwrite") and user != "firesafe":
                assert not topic.endswith(("/cmd", "#")), (user, topic)
    assert ("read", "fs/v1/+/+/cmd") in rules["sim"]
    # The fire-panel gateway: panels' device topics and its rejects, nothing else.
    assert set(rules["gb26875"]) == {
        ("write", "fs/v1/+/+/telemetry"),
        ("write", "fs/v1/+/+/event"),
        ("write", "fs/v1/+/+/status"),
        ("write", "fs/v1/_gateway/+/reject"),
    }


def test_mosquitto_config() -> None:
    conf: dict[str, str] = {}
    for line in (MOSQUITTO / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf.setdefault(key, value.strip())
    assert conf["allow_anonymous"] == "false"
    assert conf["password_file"] == "/mosquitto/run/passwd"
    assert conf["acl_file"] == "/mosquitto/config/acl"
    assert conf["listener"] == "1883"
    listeners = [
        line.split()[1:]
        for line in (MOSQUITTO / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
        if line.startswith("listener ")
    ]
    assert listeners == [["1883"], ["8883"]]
    assert conf["certfile"] == "/mosquitto/run/tls/server.crt"
    assert conf["keyfile"] == "/mosquitto/run/tls/server.key"
    assert conf["cafile"] == "/mosquitto/run/tls/ca.crt"
    assert conf["max_inflight_messages"] == "0"
    assert int(conf["max_queued_messages"]) >= 100_000
    assert conf["persistence"] == "true"
    mounts = {t: s for s, t, _ in bind_mounts(services()["mosquitto"])}
    assert mounts["/mosquitto/config/acl"] == "./deploy/mosquitto/acl"
    assert mounts["/mosquitto/config/mosquitto.conf"] == "./deploy/mosquitto/mosquitto.conf"
    entry = services()["mosquitto"]["entrypoint"]
    assert mounts[entry[-1]] == "./deploy/mosquitto/entrypoint.sh"
    assert services()["mosquitto"]["command"][0] == "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ACCOUNTS = {
    "S1/S1-D1": "pw-d1-0123456789ab",
    "S1/S1-D2": "pw-d2-0123456789ab",
    "S2/S2-D1": "pw-e1-0123456789ab",
    "S1/gateway/GW1": "pw-gw1-0123456789ab",
}
PLATFORM_PW, HEALTH_PW, SIM_PW = (
    "pw-platform-0123456789",
    "pw-health-0123456789",
    "pw-sim-0123456789ab",
)


def run_entrypoint(work: Path, accounts: str, **env: str) -> subprocess.CompletedProcess[str]:
    (work / "accounts").mkdir(exist_ok=True)
    (work / "accounts" / "devices.passwd").write_text(accounts)
    full = {
        "PATH": os.environ["PATH"],
        "MOSQUITTO_RUN_DIR": str(work / "run"),
        "MOSQUITTO_ACCOUNTS": str(work / "accounts"),
        "MOSQUITTO_TLS": str(work / "tls"),
        "MQTT_PLATFORM_PASSWORD": PLATFORM_PW,
        "MQTT_HEALTHCHECK_PASSWORD": HEALTH_PW,
        **env,
    }
    return subprocess.run(
        ["sh", str(MOSQUITTO / "entrypoint.sh"), "true"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("tls")
    subprocess.run(["sh", str(MAKE_CERTS), str(out)], check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[tuple[int, int]]:
    """The real entrypoint, config and ACL, on a local mosquitto: (plain port, TLS port)."""
    if not (shutil.which("mosquitto") and shutil.which("mosquitto_passwd")):
        pytest.skip("mosquitto is not installed")
    work = tmp_path_factory.mktemp("mosquitto")
    shutil.copytree(tls_dir, work / "tls")
    done = run_entrypoint(
        work,
        "# devices\n" + "".join(f"{u}:{p}\n" for u, p in ACCOUNTS.items()),
        MQTT_SIM_PASSWORD=SIM_PW,
    )
    assert done.returncode == 0, done.stderr
    passwd = (work / "run" / "passwd").read_text()
    assert "pw-" not in passwd, "passwords must be hashed"
    assert {line.rsplit(":", 1)[0] for line in passwd.splitlines()} == {
        "firesafe",
        "healthcheck",
        "sim",
        *ACCOUNTS,
    }
    port, tls_port = free_port(), free_port()
    conf = (MOSQUITTO / "mosquitto.conf").read_text()
    conf = (
        conf.replace("/mosquitto/run/", str(work / "run") + "/")
        .replace("/mosquitto/config/acl", str(MOSQUITTO / "acl"))
        .replace("persistence true", "persistence false")
        .replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    )
    if os.geteuid() == 0:
        conf += "\nuser root\n"  # it would otherwise drop to `mosquitto`
    (work / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(work / "mosquitto.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for wanted in (port, tls_port):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                try:
                    socket.create_connection(("127.0.0.1", wanted), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        yield port, tls_port
    finally:
        proc.terminate()
        proc.wait(10)


class Client:
    def __init__(
        self, port: int, user: str | None, password: str | None, *, ca: Path | None = None
    ) -> None:
        self.received: list[str] = []
        self.connected = threading.Event()
        self.result: int | None = None
        self.lock = threading.Lock()
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{time.time_ns()}")
        if user:
            self.mqtt.username_pw_set(user, password)
        if ca is not None:
            self.mqtt.tls_set(ca_certs=str(ca))
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self.mqtt.connect("127.0.0.1" if ca is None else "localhost", port)
        self.mqtt.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.result = int(reason.value)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.received.append(message.topic)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.mqtt.on_subscribe = lambda *args: done.set()
        self.mqtt.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str) -> None:
        self.mqtt.publish(topic, b"{}", qos=1).wait_for_publish(5)

    def wait_for(self, topic: str) -> list[str]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if topic in self.received:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{topic} never arrived; got {self.received}")

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def test_broker_enforces_the_acl(broker: tuple[int, int]) -> None:
    port, _ = broker
    anonymous = Client(port, None, None)
    assert anonymous.result != 0, "anonymous clients must be refused"
    anonymous.close()
    wrong = Client(port, "S1/S1-D1", "not-the-password")
    assert wrong.result != 0
    wrong.close()

    platform = Client(port, "firesafe", PLATFORM_PW)
    d1 = Client(port, "S1/S1-D1", ACCOUNTS["S1/S1-D1"])
    d2 = Client(port, "S1/S1-D2", ACCOUNTS["S1/S1-D2"])
    gateway = Client(port, "S1/gateway/GW1", ACCOUNTS["S1/gateway/GW1"])
    sim = Client(port, "sim", SIM_PW)
    clients = [platform, d1, d2, gateway, sim]
    try:
        assert all(c.result == 0 for c in clients)
        platform.subscribe("fs/v1/#")
        d1.subscribe("fs/v1/+/+/cmd")  # asks for everyone's commands
        for topic in ("telemetry", "event", "status"):
            d1.publish(f"fs/v1/S1/S1-D1/{topic}")
        d1.publish("fs/v1/S2/S1-D1/telemetry")  # its own id at another site
        d1.publish("fs/v1/S1/S1-D2/telemetry")  # another device's topic
        d1.publish("fs/v1/S1/S1-D1/cmd")  # forging a command
        d1.publish("fs/v1/S1/gateway/GW1/batch")  # a gateway's topic
        # Issue #10's attack: a device account posing as a gateway of another site.
        d1.publish("fs/v1/S2/gateway/S1-D1/batch")
        d1.publish("fs/v1/S2/gateway/S1/S1-D1/batch")
        gateway.publish("fs/v1/S1/gateway/GW1/batch")
        gateway.publish("fs/v1/S2/gateway/GW1/batch")  # its id, another site
        gateway.publish("fs/v1/S1/gateway/GW2/batch")  # another gateway
        gateway.publish("fs/v1/S1/GW1/telemetry")  # not a device
        sim.publish("fs/v1/S9/S9-D1/telemetry")
        sim.publish("fs/v1/S9/gateway/G9/batch")
        sim.publish("fs/v1/S9/S9-D1/cmd")  # the simulator must not command signs
        d2.publish("fs/v1/S1/S1-D2/done")  # not a contract topic
        d2.publish("fs/v1/S1/S1-D2/event")  # sent last: everything before has arrived
        # Every publish above was acknowledged (routed) before this one was sent,
        # so once it has arrived nothing allowed is still on its way.
        platform.wait_for("fs/v1/S1/S1-D2/event")
        got = list(platform.received)
        assert sorted(got) == sorted(
            [
                "fs/v1/S1/S1-D1/telemetry",
                "fs/v1/S1/S1-D1/event",
                "fs/v1/S1/S1-D1/status",
                "fs/v1/S1/gateway/GW1/batch",
                "fs/v1/S9/S9-D1/telemetry",
                "fs/v1/S9/gateway/G9/batch",
                "fs/v1/S1/S1-D2/event",
            ]
        )

        platform.publish("fs/v1/S1/S1-D2/cmd")  # not D1's
        platform.publish("fs/v1/S1/S1-D1/cmd")
        # D2's command was routed before D1's (same publisher, acknowledged
        # first): had the ACL let it through, it would have arrived first.
        assert d1.wait_for("fs/v1/S1/S1-D1/cmd") == ["fs/v1/S1/S1-D1/cmd"]

        health = Client(port, "healthcheck", HEALTH_PW)
        clients.append(health)
        health.subscribe("$SYS/broker/uptime")
        health.wait_for("$SYS/broker/uptime")
    finally:
        for client in clients:
            client.close()


def test_devices_connect_over_tls(broker: tuple[int, int], tls_dir: Path) -> None:
    port, tls_port = broker
    platform = Client(port, "firesafe", PLATFORM_PW)
    device = Client(tls_port, "S2/S2-D1", ACCOUNTS["S2/S2-D1"], ca=tls_dir / "ca.crt")
    try:
        assert platform.result == 0
        assert device.result == 0
        platform.subscribe("fs/v1/#")
        device.publish("fs/v1/S2/S2-D1/telemetry")
        platform.wait_for("fs/v1/S2/S2-D1/telemetry")
    finally:
        device.close()
        platform.close()
    # The ACL and passwords hold on the TLS listener too.
    wrong = Client(tls_port, "S2/S2-D1", "not-the-password", ca=tls_dir / "ca.crt")
    assert wrong.result != 0
    wrong.close()


@pytest.mark.parametrize(
    ("accounts", "env", "complaint"),
    [
        ("S1-D1:pw-0123456789abcdef\n", {}, "bad account name 'S1-D1'"),
        ("S1/gateway/:pw-0123456789abcdef\n", {}, "bad gateway id"),
        ("S1/D+1:pw-0123456789abcdef\n", {}, "bad device id"),
        ("S1/D1:change-me-device-password\n", {}, "change-me"),
        ("S1/D1:short\n", {}, "shorter than"),
        ("", {"MQTT_PLATFORM_PASSWORD": "change-me-mqtt-platform"}, "change-me"),
        ("", {"MQTT_SIM_PASSWORD": "sim"}, "shorter than"),
    ],
)
def test_the_entrypoint_refuses_bad_accounts(
    tmp_path: Path, tls_dir: Path, accounts: str, env: dict[str, str], complaint: str
) -> None:
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto is not installed")
    shutil.copytree(tls_dir, tmp_path / "tls")
    done = run_entrypoint(tmp_path, accounts, **env)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_make_certs_is_idempotent_and_names_the_services(tls_dir: Path, tmp_path: Path) -> None:
    before = (tls_dir / "server.crt").read_bytes()
    subprocess.run(["sh", str(MAKE_CERTS), str(tls_dir)], check=True, capture_output=True)
    assert (tls_dir / "server.crt").read_bytes() == before, "an existing certificate is kept"
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tls_dir / "server.crt"), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in ("localhost", "mosquitto", "timescaledb", "proxy", "api", "grafana"):
        assert f"DNS:{name}" in text
    assert (tls_dir / "server.key").stat().st_mode & 0o077 == 0, "the key is private"
    assert (tls_dir / "db.key").stat().st_mode & 0o077 == 0
    extra = tmp_path / "extra"
    subprocess.run(
        ["sh", str(MAKE_CERTS), str(extra), "fire.example.org", "10.1.2.3"],
        check=True,
        capture_output=True,
    )
    text = subprocess.run(
        ["openssl", "x509", "-in", str(extra / "server.crt"), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:fire.example.org" in text
    assert "IP Address:10.1.2.3" in text


# --- docker-compose config -------------------------------------------------------


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def run_compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    clean = {"PATH": os.environ["PATH"], "HOME": str(env_file.parent)}
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *extra, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean,
        cwd=env_file.parent,
    )


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in make_env("--with-sim").items()))
    done = run_compose_config(env_file)
    assert done.returncode == 0, done.stderr
    with_sim = run_compose_config(env_file, "--profile", "sim")
    assert with_sim.returncode == 0, with_sim.stderr
    with_emqx = run_compose_config(env_file, "--profile", "emqx")
    assert with_emqx.returncode == 0, with_emqx.stderr


def test_docker_compose_refuses_env_example_as_is(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    done = run_compose_config(env_file)
    assert done.returncode != 0
    assert "deploy/make-env.sh" in done.stderr


def test_docker_compose_refuses_missing_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    values = make_env()
    for name in sorted(secrets() - {"MQTT_SIM_PASSWORD"}):
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items() if k != name))
        done = run_compose_config(env_file)
        assert done.returncode != 0, name
        assert name in done.stderr


# --- the HTTPS proxy --------------------------------------------------------------


@pytest.fixture
def https_proxy(
    tmp_path: Path, tls_dir: Path, database_url: str, migration: object
) -> Iterator[tuple[str, Path]]:
    """deploy/caddy/Caddyfile on a local caddy, in front of a live API: (base URL, CA)."""
    if not shutil.which("caddy"):
        pytest.skip("caddy is not installed")
    from tests.test_api_support import live_server

    with live_server(database_url) as api_url:
        port = free_port()
        caddyfile = (
            (ROOT / "deploy" / "caddy" / "Caddyfile")
            .read_text(encoding="utf-8")
            .replace("/tls/", f"{tls_dir}/")
            .replace("api:8000", api_url.removeprefix("http://"))
            .replace("grafana:3000", f"127.0.0.1:{free_port()}")
            .replace(":8443 {", f":{port} {{")
            .replace(":3443 {", f":{free_port()} {{")
        )
        (tmp_path / "Caddyfile").write_text(caddyfile)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        log = (tmp_path / "caddy.log").open("wb")
        proc = subprocess.Popen(
            ["caddy", "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, (tmp_path / "caddy.log").read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "caddy did not listen"
                    time.sleep(0.05)
            yield f"https://localhost:{port}", tls_dir / "ca.crt"
        finally:
            proc.kill()  # a graceful stop would wait for streams to end
            proc.wait(10)
            log.close()


def test_the_api_is_served_over_https(https_proxy: tuple[str, Path]) -> None:
    import ssl

    import httpx

    from tests.test_api_support import ADMIN

    url, ca = https_proxy
    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=url, verify=context, timeout=10) as https:
        assert https.get("/health").status_code == 200
        assert https.get("/api/v1/alarms").status_code == 401
        assert https.get("/api/v1/alarms", headers=ADMIN).status_code == 200
        # Live streams pass through unbuffered: the first line arrives at once.
        with https.stream("GET", "/api/v1/alarms/stream", headers=ADMIN) as stream:
            assert stream.status_code == 200
            assert next(stream.iter_lines()).startswith("retry:")
    # Plain HTTP is not spoken on the TLS port.
    with httpx.Client(timeout=10) as plain, pytest.raises(httpx.HTTPError):
        plain.get(url.replace("https://", "http://") + "/health").raise_for_status()
