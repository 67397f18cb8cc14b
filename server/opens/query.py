"""What an email-facing URL asks for, and what an image open answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from server.outcomes import Outcome

MAX_RECIPIENT_LEN = 256
MERGE_PREFIX = "m."


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The decoded pairs of a query string as received, in order, blank values kept: what
    yarl's `URL.query` holds (and `parse_qsl(raw_query, keep_blank_values=True)`), without
    the multidict an open never reads by name."""
    if "%" in raw_query:
        return parse_qsl(raw_query, keep_blank_values=True)
    # Nothing to decode but '+', as yarl does it.
    pairs = []
    for name_value in raw_query.replace("+", " ").split("&"):
        if name_value:
            name, _, value = name_value.partition("=")
            pairs.append((name, value))
    return pairs


@dataclass(slots=True)
class OpenQuery:
    """The email-facing URL's parameters, parsed leniently: a bad value is ignored.
    Read-only, but not frozen: one is made per open (a frozen dataclass is four times
    as slow to make)."""

    recipient: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    tz: str | None = None
    dpr: int = 1

    @staticmethod
    def parse(pairs: Sequence[tuple[str, str]]) -> OpenQuery:
        params: dict[str, str] = {}
        recipient = tz = None
        dpr = 1
        for key, value in pairs:
            if key == "r" and 0 < len(value) <= MAX_RECIPIENT_LEN:
                recipient = value
            elif key == "tz" and value:
                tz = value
            elif key == "dpr" and value in ("1", "2", "3"):
                dpr = int(value)
            elif key.startswith(MERGE_PREFIX) and len(key) > len(MERGE_PREFIX):
                params[key[len(MERGE_PREFIX) :]] = value
        return OpenQuery(recipient, params, tz, dpr)


def reader_of(canonical_query: str) -> tuple[str | None, int]:
    """The recipient (`r`) and scale (`dpr`) a canonical query asks for, as `OpenQuery.parse`
    reads them from its decoded pairs, without decoding the rest: in a canonical query
    (`Signer.signed_query`) every key and value is percent-encoded but for unreserved
    characters, so no `&`, `=` or `+` stands for itself inside one, and `r` and `dpr`
    are written as those letters."""
    recipient = None
    dpr = 1
    for key_value in canonical_query.split("&"):
        key, _, value = key_value.partition("=")
        if key == "r":
            if "%" in value:
                value = unquote(value)
            if 0 < len(value) <= MAX_RECIPIENT_LEN:
                recipient = value
        elif key == "dpr" and value in ("1", "2", "3"):
            dpr = int(value)
    return recipient, dpr


def dpr_of(raw_query: str) -> int:
    """The `dpr` an open asks for (as `OpenQuery.parse` reads it) from its raw query: all
    a refused open needs of it, without decoding the rest. A query names `dpr` only if
    it holds those letters, or one of them percent-encoded."""
    named = "dpr" in raw_query or "%64" in raw_query or "%70" in raw_query or "%72" in raw_query
    return OpenQuery.parse(query_pairs(raw_query)).dpr if named else 1


@dataclass(slots=True)
class ImageAnswer:
    body: bytes
    variant: str
    outcome: Outcome
    # What the open is recorded with: the recipient when the URL was signed for them,
    # and their country when the open located them; and where a click on it goes, when
    # it is remembered for the click (not for a default served for a fault).
    recipient: str | None = None
    country: str | None = None
    link: str | None = None
