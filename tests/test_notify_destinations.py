"""Where a manager's webhook may point, and where its delivery connects.

The security check's DNS rebinding: a name that answered a public address to
the notifier's check and 127.0.0.1 to the connect that followed got a
manager's chosen body POSTed to a loopback service, its status shown back to
the manager. Real DNS cannot be made to rebind in a test, so the resolver is
the one thing replaced here; the request is the notifier's own (`_post`),
captured where it would leave the process."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from notify import destinations, render
from notify.service import Notifier
from storage.queries.notifications import Claimed
from tests.test_notify_render import ALARM

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::7f00:1",  # local-use NAT64 (RFC 8215)
        "::ffff:0:7f00:1",  # IPv4-translated
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "224.0.0.1",  # multicast
        "fe80::1%eth0",
    ],
)
def test_addresses_that_are_not_public(address: str) -> None:
    assert destinations._not_public(address)


@pytest.mark.parametrize("address", [PUBLIC, "2606:4700::1111", "64:ff9b::5db8:d822"])
def test_public_addresses(address: str) -> None:
    assert not destinations._not_public(address)


def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A resolver answering PUBLIC once, then 127.0.0.1 (TTL 0)."""
    asked: list[str] = []

    async def getaddrinfo(self: Any, host: str, port: int, **_: Any) -> list[Any]:
        asked.append(host)
        address = PUBLIC if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return asked


def claimed(url: str) -> Claimed:
    return Claimed(
        id="d-1",
        alarm_id="a-1",
        event="confirmed",
        escalation=0,
        attempts=1,
        created_at=datetime.now(UTC),
        alarm=ALARM,
        target_id="mgr",
        kind="webhook",
        url=url,
        address=None,
        secret=None,
        language="en",
        template=None,
        content_type=None,
        timezone="UTC",
        public_only=True,
    )


@pytest.mark.parametrize(
    ("url", "host", "server_name"),
    [
        ("http://rebind.test:18199/hook?x=1", "rebind.test:18199", None),
        ("https://rebind.test/hook", "rebind.test", "rebind.test"),
    ],
)
def test_a_managers_delivery_connects_to_the_address_it_checked(
    monkeypatch: pytest.MonkeyPatch, url: str, host: str, server_name: str | None
) -> None:
    asked = rebinding(monkeypatch)
    sent: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    async def deliver() -> int:
        notifier = Notifier("", smtp=None, smtp_from="firesafe@localhost")
        c = claimed(url)
        notice = render.Notice(c.id, c.event, 0, c.alarm, "en")
        async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as http:
            return await notifier._post(http, c, notice)

    assert asyncio.run(deliver()) == 204
    (request,) = sent
    assert request.url.host == PUBLIC  # not where the name points by now
    assert request.url.raw_path.startswith(b"/hook")
    assert request.headers["host"] == host
    assert request.extensions.get("sni_hostname") == server_name
    assert asked == ["rebind.test"]  # resolved once: the check is the connect
