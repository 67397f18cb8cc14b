"""An open's query is decoded from the raw query string, pair by pair, exactly as yarl's
`URL.query` decodes it: the signature and the reader read the same values either way."""

from __future__ import annotations

import pytest
from yarl import URL

from server.opens.query import OpenQuery, query_pairs

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
