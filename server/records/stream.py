"""Reading the record stream from a cursor: what the export serves.

Records are entries of one Redis stream (`keys.STREAM_KEY`), appended by the open log
and trimmed there to the newest `ATOPEN_RECORDS_MAX` and the last `ATOPEN_RECORDS_DAYS`
days (writes.APPEND_SCRIPT). An entry's id (`1733390000123-0`: ms and a sequence) is
its cursor: the next page starts after it, so a reader that follows the cursors reads
every record once, in order, while more keep arriving. A cursor older than the newest
record trimmed away would skip records: it is refused (`CursorExpiredError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis.asyncio import Redis

from server.records.keys import STREAM_KEY, TRIMMED_KEY
from server.records.record import Record

CURSOR_PATTERN = re.compile(r"^(\d{1,19})-(\d{1,19})$")
# The cursor before every record.
START = "0-0"


class CursorExpiredError(Exception):
    """Records after the cursor were trimmed away before it was read."""


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[tuple[str, Record]]  # (id, record), oldest first
    cursor: str  # the `after` of the next page


def _order(cursor: str) -> tuple[int, int]:
    match = CURSOR_PATTERN.match(cursor)
    if match is None:
        raise ValueError(f"not a cursor: {cursor!r}")
    return int(match[1]), int(match[2])


async def read_page(redis: Redis, after: str | None, limit: int) -> Page:
    """Up to `limit` records after the cursor `after` (from the oldest kept when None).
    Raises CursorExpiredError when records after `after` are no longer kept."""
    start = after or START
    async with redis.pipeline(transaction=True) as pipe:  # no trim in between
        pipe.get(TRIMMED_KEY)
        pipe.xrange(STREAM_KEY, min=f"({start}", max="+", count=limit)
        trimmed, entries = await pipe.execute()
    if after is not None and trimmed is not None and _order(after) < _order(trimmed.decode()):
        raise CursorExpiredError(after)
    page = []
    for raw_id, fields in entries:
        entry_id = raw_id.decode()
        try:
            page.append((entry_id, Record.decode(fields[b"r"])))
        except (KeyError, ValueError, TypeError):
            continue  # not an entry this version writes; its cursor still moves on
    cursor = entries[-1][0].decode() if entries else start
    return Page(page, cursor)
