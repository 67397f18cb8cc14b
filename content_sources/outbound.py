"""Where atopen's own outbound requests may go: live data and remote images share one rule.

A URL from a block, or from recipient data a block reads, must not turn atopen into a
way into the network it runs in: the loopback interface, the Redis host, a cloud
metadata service at `169.254.169.254`, a private range. So only public addresses are
connected to, unless the operator lists networks in `ATOPEN_FETCH_ALLOW` (their own
APIs on `10.0.0.0/8`, say).

The rule is applied where the address is known for certain, not to the URL's text:

- `GuardedResolver` keeps only the allowed addresses of a name's DNS answer and fails
  when none is left; the connection then uses those very addresses, so an answer that
  changes between a check and the connection (DNS rebinding) cannot bring another in.
- `guarded_connector`'s socket factory checks the address of every connection attempt,
  IP literals included (aiohttp does not resolve those), so nothing reaches `connect()`
  unchecked, whatever the URL's spelling and after every redirect.
- `host_address` reads an IP literal in every spelling a resolver accepts (`0x7f.1`,
  `2130706433`, `017700000001`), so callers can refuse one before any request.

An address is public when neither it nor the IPv4 address it stands for (IPv4-mapped,
IPv4-compatible, 6to4, NAT64) is loopback, private, link-local, multicast, unspecified,
reserved or shared (`100.64.0.0/10`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT: inside someone's network
_IPV4_COMPATIBLE = ip_network("::/96")  # deprecated ::a.b.c.d
_NAT64 = ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are IPv4
_NAT64_LOCAL = ip_network("64:ff9b:1::/48")  # local-use NAT64: translated inside a network
# What inet_aton reads as IPv4: one to four parts, each decimal, octal (leading 0) or hex.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.I)


class AddressRefused(OSError):
    """An address outbound requests may not reach; the message names it (for logs only)."""


def parse_allow(raw: str) -> tuple[IPNetwork, ...]:
    """`ATOPEN_FETCH_ALLOW`: comma-separated CIDR networks or addresses; ValueError if bad."""
    networks: list[IPNetwork] = []
    for part in raw.split(","):
        entry = part.strip()
        if not entry:
            raise ValueError("empty entry in the comma-separated list")
        try:
            networks.append(ip_network(entry))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not a CIDR network with its host bits zero "
                "(e.g. 10.0.0.0/8, 127.0.0.1/32, fd00::/8)"
            ) from None
    return tuple(networks)


def permits(address: str | IPAddress, allow: Iterable[IPNetwork] = ()) -> bool:
    """Whether outbound requests may connect to `address`: public, or in `allow`."""
    ip = ip_address(address) if isinstance(address, str) else address
    networks = tuple(allow)
    inner = _embedded_ipv4(ip) if isinstance(ip, IPv6Address) else None
    if any(ip in net or (inner is not None and inner in net) for net in networks):
        return True
    if isinstance(ip, IPv6Address) and ip in _NAT64_LOCAL:
        return False
    # A translated form is judged by the IPv4 address packets really go to: on a
    # network with NAT64, 64:ff9b::7f00:1 reaches the gateway's own loopback, say.
    return _public(inner) if inner is not None else _public(ip)


def host_address(host: str) -> IPAddress | None:
    """The IP address a URL's host stands for when it is a literal, in any spelling.

    `[::1]` and `::1`, `127.0.0.1`, and the forms resolvers still accept for IPv4:
    `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`. None for a name.
    """
    bare = host.strip("[]")
    try:
        return ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if not _NUMERIC_HOST.match(bare):
        return None
    try:
        return IPv4Address(socket.inet_aton(bare.rstrip(".")))
    except OSError:
        return None  # a part too large: no resolver reads it as an address either


def is_canonical(host: str, address: IPAddress) -> bool:
    """Whether a literal host is written the usual way (dotted decimal IPv4, or IPv6)."""
    return isinstance(address, IPv6Address) or host == str(address)


def check_spelling(host: str) -> None:
    """Raise AddressRefused if `host` is IPv4 written other than as four decimal numbers.

    Refused even in an allowed network: no legitimate source needs it, and each reader
    of such a URL (a proxy, a log, a person) may take it for a different address.
    """
    address = host_address(host)
    if address is not None and not is_canonical(host.strip("[]"), address):
        raise AddressRefused(f"{host} is an IPv4 address written in an unusual form")


def check_host(host: str, allow: Iterable[IPNetwork] = ()) -> None:
    """Raise AddressRefused if `host` is an IP literal outbound requests may not reach."""
    check_spelling(host)
    address = host_address(host)
    if address is not None and not permits(address, allow):
        raise AddressRefused(f"{address} is not an address outbound requests may reach")


def is_refusal(exc: BaseException) -> bool:
    """Whether a client error is this module refusing an address, and no other failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AddressRefused):
            return True
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorError):
            current = current.os_error
        else:
            current = current.__cause__
    return False


class GuardedResolver(AbstractResolver):
    """Resolves names to the addresses outbound requests may reach, and to no other.

    `inner` does the resolving (the system's resolver by default; tests give their own).
    """

    def __init__(
        self, allow: Iterable[IPNetwork] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allow = tuple(allow)
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if permits(r["host"], self._allow)]
        if not kept:
            addresses = ", ".join(sorted({r["host"] for r in results}))
            raise AddressRefused(
                f"{host} resolves to no address outbound requests may reach ({addresses})"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(
    allow: Sequence[IPNetwork] = (),
    *,
    resolver: AbstractResolver | None = None,
    **options: Any,
) -> aiohttp.TCPConnector:
    """A connector that connects only to addresses `permits` accepts; `options` are
    TCPConnector's own (limits, DNS cache)."""
    networks = tuple(allow)

    def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        if not permits(str(sockaddr[0]), networks):
            raise AddressRefused(f"{sockaddr[0]} is not an address outbound requests may reach")
        return socket.socket(family, kind, proto)

    return aiohttp.TCPConnector(
        resolver=GuardedResolver(networks, resolver),
        socket_factory=guarded_socket,
        **options,
    )


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries, for the forms that reach it."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def _public(address: IPAddress) -> bool:
    # Each property is asked, not `is_global` alone: Python versions differ on what
    # `is_global` covers, and it counts multicast as global.
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or (isinstance(address, IPv4Address) and address in _SHARED)
        or (isinstance(address, IPv6Address) and address.is_site_local)
        or not address.is_global
    )
