"""Where a manager's webhook may point: public addresses only.

A building manager is trusted with their own sites, not with the monitoring
centre's network: a webhook they configure must not make the notifier POST to
the database, the broker, the API's own port, a cloud metadata service or
anything else on a private network (server-side request forgery). Admins'
targets may point anywhere (an on-premises paging gateway). Checked when the
target is saved and again before every delivery, on the addresses the host
resolves to at that moment; the delivery then connects to the address it
checked (`pin_public`: the URL's host replaced by it, the name kept in the
`Host` header and the TLS server name), so a name that answers a public
address to the check and a private one to the connect (DNS rebinding) reaches
nothing private.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# IPv6 prefixes whose last 32 bits are an IPv4 address a translator or a stack
# may reach: NAT64's well-known (RFC 6052) and local-use (RFC 8215) prefixes,
# IPv4-translated (RFC 2765) and the deprecated IPv4-compatible addresses.
_CARRIES_IPV4 = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96")
)


class PrivateDestination(ValueError):
    """The URL's host is, or resolves to, an address that is not public."""


class UnresolvableHost(PrivateDestination):
    """The URL's host has no address (its text keeps the resolver's own words,
    for the delivery log; the API says it in the caller's language from these)."""

    def __init__(self, host: str, error: OSError | UnicodeError) -> None:
        super().__init__(f"webhook host {host} does not resolve ({error})")
        self.host = host
        # The name servers did not answer (EAI_AGAIN): it may resolve later.
        self.temporary = isinstance(error, socket.gaierror) and error.errno == socket.EAI_AGAIN


@dataclass(frozen=True, slots=True)
class Pinned:
    """A webhook request aimed at the address that was checked."""

    url: httpx.URL  # the host replaced by the checked address
    host_header: str  # the URL's own host[:port]
    server_name: str | None  # TLS: the certificate is checked against the name


def _not_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4 carried inside IPv6 (mapped, 6to4, NAT64, Teredo's client...) is
        # judged as the IPv4 address it reaches.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in net for net in _CARRIES_IPV4):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_multicast or not ip.is_global


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be delivered to (None: it can): a port out of
    range or not a number, a host that is not one (`http://[zz]/`). Checked
    when a target is saved, for every role (a manager's got a 500, an admin's
    was stored and failed every delivery)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # (raises on a port out of range or not a number)
        httpx.URL(url)
        if parts.hostname:
            parts.hostname.encode("idna")  # (an empty or over-long label: UnicodeError)
    except (ValueError, httpx.InvalidURL):  # (UnicodeError is a ValueError)
        return f"webhook url {url} has a bad host or port"
    if not parts.hostname:
        return f"webhook url {url} has no host"
    if port == 0 or parts.netloc.endswith(":"):
        return f"webhook url {url} has a bad host or port"
    return None


async def _public_addresses(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise PrivateDestination(f"webhook url {url} has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # (idna: a label empty or over 63 characters)
        raise UnresolvableHost(host, exc) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    private = sorted(a for a in addresses if _not_public(a))
    if private:
        raise PrivateDestination(
            f"webhook host {host} resolves to a non-public address ({', '.join(private)}); "
            "only an admin may add such a target"
        )
    return addresses


async def require_public(url: str) -> None:
    """Raise PrivateDestination unless every address of the URL's host is public."""
    await _public_addresses(url)


async def pin_public(url: str) -> Pinned:
    """The request to make for `url`: to its first address, once every address
    it resolves to now is public (else PrivateDestination)."""
    address = (await _public_addresses(url))[0].split("%", 1)[0]
    target = httpx.URL(url)
    server_name = target.host if target.scheme == "https" else None
    return Pinned(target.copy_with(host=address), target.netloc.decode("ascii"), server_name)
