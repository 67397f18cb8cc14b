"""The address of the client that fetched an image, seen through our own reverse proxies.

Geolocation is only as honest as the address it is given. Behind a load balancer the
connection comes from the balancer, and the client's address is in `X-Forwarded-For`;
but anyone can send that header, so it is believed only when the connection comes from
a proxy the operator named as trusted (`ATOPEN_TRUSTED_PROXIES`), and only as far as
the chain of trusted proxies goes. Each proxy appends the address it saw, so the list
is read from the right: the first entry that is not a trusted proxy is the client, and
whatever lies to its left was written by the client itself and may be forged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses and CIDR networks; raises ValueError naming a bad entry.

    An empty value trusts no proxy: `X-Forwarded-For` is then never believed.
    """
    if not value.strip():
        return ()
    networks: list[IPNetwork] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            raise ValueError("empty entry in the comma-separated list")
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            networks.append(_loose_network(entry))
    return tuple(networks)


def _loose_network(entry: str) -> IPNetwork:
    """Say what is wrong with an entry `ip_network` refused, most helpfully first."""
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(
            f"{entry!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8, 2001:db8::/32)"
        ) from None
    raise ValueError(f"{entry!r} has host bits set; did you mean {network}?")


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The client's address, or None when it cannot be known.

    `peer` is the connection's remote address; `forwarded_for` is every
    `X-Forwarded-For` header of the request, joined with commas in order.
    """
    peer_address = parse_address(peer)
    if peer_address is None:
        return None
    if not _is_trusted(peer_address, trusted) or not forwarded_for:
        return str(peer_address)
    hop = peer_address
    for raw in reversed(forwarded_for.split(",")):
        address = parse_address(raw)
        if address is None:
            # A trusted proxy wrote nonsense (or left a hole): past this, nothing is known.
            return None
        hop = address
        if not _is_trusted(hop, trusted):
            return str(hop)
    # Every hop was one of our proxies: the request started inside the trusted network.
    return str(hop)


def parse_address(text: str | None) -> IPAddress | None:
    """An address as proxies write it (`1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443`).

    IPv4 addresses mapped into IPv6 (from dual-stack sockets) come back as IPv4, so
    that they match IPv4 networks and the geolocation database's IPv4 entries.
    """
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)
