"""Where a manager's webhook may point: public addresses only.

A building manager is trusted with their own sites, not with the monitoring
centre's network: a webhook they configure must not make the notifier POST to
the database, the broker, the API's own port, a cloud metadata service or
anything else on a private network (server-side request forgery). Admins'
targets may point anywhere (an on-premises paging gateway). Checked when the
target is saved and again before every delivery, on the addresses the host
resolves to at that moment (a name that later resolves elsewhere is caught at
delivery; the connection itself is made by name, so a change between the check
and the connect is the remaining window).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class PrivateDestination(ValueError):
    """The URL's host is, or resolves to, an address that is not public."""


def _not_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


async def require_public(url: str) -> None:
    """Raise PrivateDestination unless every address of the URL's host is public."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise PrivateDestination(f"webhook url {url} has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PrivateDestination(f"webhook host {host} does not resolve ({exc})") from exc
    private = sorted({str(info[4][0]) for info in infos if _not_public(str(info[4][0]))})
    if private:
        raise PrivateDestination(
            f"webhook host {host} resolves to a non-public address ({', '.join(private)}); "
            "only an admin may add such a target"
        )
