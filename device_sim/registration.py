"""Registering a simulated estate through the public REST API (contract 4)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

log = logging.getLogger(__name__)

# Devices per POST: a few hundred keeps each request well under a second.
REGISTER_BATCH = 500
# The API may still be starting (`firesafe up` starts it alongside us).
REGISTER_TIMEOUT_S = 60.0
RETRY_BASE_S = 0.5
RETRY_MAX_S = 5.0
HTTP_TIMEOUT_S = 30.0


class RegistrationError(RuntimeError):
    pass


def write_registry(path: Path, registry: Sequence[dict[str, Any]]) -> None:
    """The registry as one JSON list, ready for `POST /api/v1/devices`."""
    path.write_bytes(orjson.dumps(list(registry), option=orjson.OPT_INDENT_2) + b"\n")


def register(
    api_url: str,
    token: str,
    registry: Sequence[dict[str, Any]],
    *,
    batch: int = REGISTER_BATCH,
    timeout_s: float = REGISTER_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """POST the devices in batches, retrying while the API is unreachable or 5xx."""
    url = api_url.rstrip("/") + "/api/v1/devices"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    deadline = time.monotonic() + timeout_s
    done = 0
    with httpx.Client(timeout=HTTP_TIMEOUT_S, transport=transport) as client:
        for i in range(0, len(registry), batch):
            body = orjson.dumps(list(registry[i : i + batch]))
            attempt = 0
            while True:
                try:
                    resp = client.post(url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status_code < 300:
                        break
                    if resp.status_code < 500:
                        raise RegistrationError(
                            f"POST {url} -> {resp.status_code}: {resp.text[:500]}"
                        )
                    problem = f"HTTP {resp.status_code}"
                if time.monotonic() > deadline:
                    raise RegistrationError(f"POST {url} failed for {timeout_s:.0f} s: {problem}")
                attempt += 1
                pause = min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
                log.info("API not ready (%s); retrying in %.1f s", problem, pause)
                time.sleep(pause)
            done += len(registry[i : i + batch])
            log.debug("registered %d/%d devices", done, len(registry))
    return done


def configure_sites(
    api_url: str,
    token: str,
    sites: Sequence[str],
    *,
    timezone: str | None = None,
    standard: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """Give each site its time zone and standard (`PUT /api/v1/sites/{id}`)."""
    body = {k: v for k, v in (("timezone", timezone), ("standard", standard)) if v is not None}
    if not body:
        return
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=HTTP_TIMEOUT_S, transport=transport) as client:
        for site in sites:
            url = f"{api_url.rstrip('/')}/api/v1/sites/{site}"
            try:
                resp = client.put(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                raise RegistrationError(f"PUT {url}: {type(exc).__name__}: {exc}") from exc
            if resp.status_code >= 300:
                raise RegistrationError(f"PUT {url} -> {resp.status_code}: {resp.text[:500]}")
