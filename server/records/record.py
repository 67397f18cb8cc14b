"""One record: what was answered to an image request or a click (contract section 5).

Records are kept in one Redis stream, each entry a batch of them as a JSON array of
arrays (field names are not repeated a million times): `writes.py` appends them,
`stream.py` reads them, and `Record.as_dict` gives the fields the export names. The
writer makes a flush's thousands of records as plain tuples of the same fields
(`RecordFields`): a named tuple costs a Python call each to make.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import orjson

from server.records.classify import FetchClass

RecordType = Literal["open", "click"]

# A record's fields in `Record`'s order, as a plain tuple (a `Record` is one too).
RecordFields = tuple[
    int,
    RecordType,
    str,
    int,
    str | None,
    str | None,
    str,
    FetchClass,
    str | None,
    str | None,
    str | None,
]


class Record(NamedTuple):
    """A named tuple: a flush makes thousands, and it is stored as the JSON array it is."""

    ts_ms: int  # when the request was answered, ms since the epoch (UTC)
    type: RecordType
    block: str
    version: int
    variant: str | None  # a click's is the variant last shown to the recipient, if known
    recipient: str | None  # None unless the URL was signed for that recipient
    client: str  # `client.kind`
    fetch_class: FetchClass
    country: str | None  # ISO 3166 code, when the open located the reader
    outcome: str | None  # an open's: rendered | cached | static | fallback:REASON
    link: str | None  # a click's destination

    def as_dict(self) -> dict[str, object]:
        """The record as the export writes it: `ts` in ISO 8601 UTC, empty fields left out
        only where the type never has them (an open's link, a click's outcome)."""
        fields: dict[str, object] = {
            "ts": datetime.fromtimestamp(self.ts_ms / 1000, UTC).isoformat(timespec="milliseconds"),
            "type": self.type,
            "block": self.block,
            "version": self.version,
            "variant": self.variant,
            "recipient": self.recipient,
            "client": self.client,
            "class": self.fetch_class,
            "country": self.country,
        }
        if self.type == "open":
            fields["outcome"] = self.outcome
        else:
            fields["link"] = self.link
        return fields


def encode_batch(records: Sequence[RecordFields]) -> bytes:
    """The records as one JSON array of arrays (a `Record` is written as its tuple)."""
    return orjson.dumps(records, default=tuple)


def decode_batch(raw: bytes | str) -> list[Record]:
    """The records of one stream entry; ValueError or TypeError if it is not one."""
    return [Record(*fields) for fields in orjson.loads(raw)]
