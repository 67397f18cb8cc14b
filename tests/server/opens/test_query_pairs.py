"""An open's query is decoded from the raw query string, pair by pair, exactly as yarl's
`URL.query` decodes it: the signature and the reader read the same values either way."""

from __future__ import annotations

import pytest
from yarl import URL

from server.opens.query import MAX_RECIPIENT_LEN, OpenQuery, dpr_of, query_pairs, reader_of
from server.signing import Signer

QUERIES = [
    "",
    "r=r1",
    "r=r1&sig=abc",
    "r=a+b&m.name=J%C3%BCrgen&sig=x",
    "r=&tz=&dpr=2",
    "flag&r=x&&&=v&k=",
    "r=a%2Bb%26c%3Dd&m.x=%zz&m.y=%E2%82",
    "m.a=1&m.a=2&r=x=y",
    "r=%20+%20",
    "r=ok;tz=Europe/Paris",
]


@pytest.mark.parametrize("raw", QUERIES)
def test_pairs_are_those_of_the_url(raw: str) -> None:
    url = URL.build(path="/i/b.png", query_string=raw, encoded=True)
    assert query_pairs(url.raw_query_string) == list(url.query.items())


def test_the_reader_and_merge_fields_come_decoded() -> None:
    query = OpenQuery.parse(query_pairs("r=ann%40example.com&m.first=J%C3%BCrgen+K&dpr=2"))
    assert query.recipient == "ann@example.com"
    assert query.params == {"first": "Jürgen K"}
    assert query.dpr == 2


@pytest.mark.parametrize(
    ("raw_query", "dpr"),
    [
        ("r=u1&sig=abc", 1),
        ("r=u1&dpr=2&sig=abc", 2),
        ("dpr=3", 3),
        ("dpr=9", 1),  # not a scale atopen draws: ignored, as OpenQuery.parse does
        ("m.dpr=2&r=u1", 1),  # a merge field named dpr is not the scale
        ("r=dpr&dpr=2", 2),
        ("%64pr=2", 2),  # percent-encoded, as a proxy may send it
        ("d%70r=3&r=a%40b.example", 3),
        ("r=a%40b.example", 1),
    ],
)
def test_a_refused_open_reads_only_its_scale_from_the_query(raw_query: str, dpr: int) -> None:
    assert dpr_of(raw_query) == dpr
    assert dpr_of(raw_query) == OpenQuery.parse(query_pairs(raw_query)).dpr


# Queries as a sender writes them before signing: the signer puts them in canonical order.
SIGNED_QUERIES = [
    "r=r1",
    "r=ann@example.com&dpr=2",
    "r=J%C3%BCrgen K&m.x=a&b&tz=Europe/Paris",
    "r=a+b%2Bc&dpr=3&m.dpr=2",
    "r=x%3Dy%26z&r=second",  # repeated: the last in canonical order wins, as in `parse`
    "r=&dpr=9",  # an empty reader and a scale atopen does not draw: neither read
    f"r={'x' * (MAX_RECIPIENT_LEN + 1)}&dpr=2",  # too long to be a reader
    f"r={'é' * MAX_RECIPIENT_LEN}",  # the longest reader, percent-encoded three times over
    "m.r=1&dpr=1",  # a merge field named r is not the reader
    "",
]


@pytest.mark.parametrize("query", SIGNED_QUERIES)
def test_the_reader_of_a_signed_query_is_read_as_from_its_decoded_pairs(query: str) -> None:
    signer = Signer(["k"])
    url = signer.sign_url(f"/i/b.png?{query}" if query else "/i/b.png")
    path, _, raw_query = url.partition("?")
    canonical = signer.signed_query(path, raw_query)
    assert canonical is not None
    decoded = OpenQuery.parse(query_pairs(raw_query))
    assert reader_of(canonical) == (decoded.recipient, decoded.dpr)


def test_a_query_signed_in_another_order_or_not_at_all_has_no_canonical_form() -> None:
    signer = Signer(["k"])
    url = signer.sign_url("/i/b.png?r=u1&dpr=2")
    path, _, raw_query = url.partition("?")
    dpr, reader, sig = raw_query.split("&")
    assert signer.signed_query(path, f"{dpr}&{reader}&{sig}") == "dpr=2&r=u1"
    # The same pairs, reordered: still signed, but only `verify_request` can tell.
    reordered = f"{reader}&{dpr}&{sig}"
    assert signer.signed_query(path, reordered) is None
    assert signer.verify_request(path, reordered, query_pairs(reordered))
    assert signer.signed_query(path, "r=u1&dpr=2") is None
    assert signer.signed_query(path, f"r=u2&dpr=2&{sig}") is None
