"""An open's query is decoded from the raw query string, pair by pair, exactly as yarl's
`URL.query` decodes it: the signature and the reader read the same values either way."""

from __future__ import annotations

import pytest
from yarl import URL

from server.opens.query import OpenQuery, dpr_of, query_pairs

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
