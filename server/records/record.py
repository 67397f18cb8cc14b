"""One record: what was answered to an image request or a click (contract section 5).

Records are kept in one Redis stream, each entry a compact JSON array (field names are
not repeated a million times): `RecordStore` in `stream.py` writes and reads them, and
`Record.as_dict` gives the fields the export and the documentation name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from server.records.classify import FetchClass

RecordType = Literal["open", "click"]


@dataclass(frozen=True, slots=True)
class Record:
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

    def encode(self) -> bytes:
        return orjson.dumps(
            [
                self.ts_ms,
                self.type,
                self.block,
                self.version,
                self.variant,
                self.recipient,
                self.client,
                self.fetch_class,
                self.country,
                self.outcome,
                self.link,
            ]
        )

    @staticmethod
    def decode(raw: bytes | str) -> Record:
        ts_ms, type_, block, version, variant, recipient, client, klass, country, outcome, link = (
            orjson.loads(raw)
        )
        return Record(
            ts_ms, type_, block, version, variant, recipient, client, klass, country, outcome, link
        )

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
