"""The client's address: `X-Forwarded-For` is believed only from trusted proxies, from the right."""

from __future__ import annotations

import ipaddress

import pytest

from content_sources.client_address import client_ip, parse_address, parse_trusted_proxies

# Our load balancers: a private network and one public address.
TRUSTED = parse_trusted_proxies("10.0.0.0/8, 203.0.113.7, fd00::/8")
READER = "81.2.69.160"


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_ip(READER, None, TRUSTED) == READER
    assert client_ip(READER, "216.160.83.56", TRUSTED) == READER
    # With no trusted proxies at all, the header is never read.
    assert client_ip("10.0.0.5", "216.160.83.56", ()) == "10.0.0.5"


def test_a_trusted_peer_forwards_the_client() -> None:
    assert client_ip("10.0.0.5", READER, TRUSTED) == READER
    assert client_ip("203.0.113.7", f" {READER} ", TRUSTED) == READER


def test_spoofed_entries_left_of_the_client_are_ignored() -> None:
    # The reader sent "X-Forwarded-For: 216.160.83.56"; our proxy appended what it saw.
    assert client_ip("10.0.0.5", f"216.160.83.56, {READER}", TRUSTED) == READER
    # Even a spoofed entry that claims to be one of our proxies.
    assert client_ip("10.0.0.5", f"10.9.9.9, {READER}", TRUSTED) == READER


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    header = f"216.160.83.56, {READER}, 203.0.113.7, 10.1.2.3"
    assert client_ip("10.0.0.5", header, TRUSTED) == READER
    # Several headers arrive joined with commas, in order.
    assert client_ip("10.0.0.5", ", ".join([READER, "10.1.2.3"]), TRUSTED) == READER


def test_when_every_hop_is_ours_the_farthest_one_is_the_client() -> None:
    assert client_ip("10.0.0.5", "10.1.1.1, 10.2.2.2", TRUSTED) == "10.1.1.1"
    assert client_ip("10.0.0.5", None, TRUSTED) == "10.0.0.5"
    assert client_ip("10.0.0.5", "", TRUSTED) == "10.0.0.5"


@pytest.mark.parametrize("header", ["unknown", f"{READER}, ", f"{READER}, garbage", "1.2.3"])
def test_nonsense_where_the_client_should_be_makes_it_unknown(header: str) -> None:
    assert client_ip("10.0.0.5", header, TRUSTED) is None


def test_addresses_as_proxies_write_them() -> None:
    assert client_ip("10.0.0.5", f"{READER}:51234", TRUSTED) == READER
    assert client_ip("10.0.0.5", "[2001:480::1]:443", TRUSTED) == "2001:480::1"
    assert client_ip("10.0.0.5", "2001:480::1", TRUSTED) == "2001:480::1"
    assert client_ip("fd00::1", READER, TRUSTED) == READER


def test_ipv4_mapped_peers_count_as_ipv4() -> None:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    assert client_ip("::ffff:10.0.0.5", READER, TRUSTED) == READER
    assert client_ip(f"::ffff:{READER}", None, ()) == READER
    assert parse_address("::ffff:81.2.69.160") == ipaddress.IPv4Address(READER)


@pytest.mark.parametrize("peer", [None, "", "not-an-address"])
def test_no_usable_peer_means_no_client_address(peer: str | None) -> None:
    assert client_ip(peer, READER, TRUSTED) is None


def test_trusted_proxies_setting() -> None:
    assert parse_trusted_proxies("") == ()
    assert parse_trusted_proxies("  ") == ()
    assert parse_trusted_proxies("10.0.0.0/8,192.0.2.1, ::1") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("::1/128"),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.0/8,,10.1.0.0/16", "empty entry"),
        ("10.0.0.0/8, lb.internal", "'lb.internal' is not an IP address or CIDR network"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or CIDR network"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
    ],
)
def test_a_bad_trusted_proxy_entry_is_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("?", r"\?")):
        parse_trusted_proxies(value)
