"""What an email-facing URL asks for, and what an image open answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_RECIPIENT_LEN = 256
MERGE_PREFIX = "m."


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


@dataclass(slots=True)
class ImageAnswer:
    body: bytes
    variant: str
    outcome: str  # rendered | cached | static | fallback:<reason>
