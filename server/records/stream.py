"""Reading the record stream from a cursor: what the export serves.

Records are kept in one Redis stream (`keys.STREAM_KEY`): each entry a batch of them
(one flush's), appended by the open log and trimmed there to the newest
`ATOPEN_RECORDS_MAX` records and the last `ATOPEN_RECORDS_DAYS` days
(writes.APPEND_SCRIPT). A record's id is its entry's id and its place in the entry,
`1733390000123-0.17`; a cursor is the id of the last record read, or just the entry's
id when the page ended with that entry's last record. The next page starts after it,
so a reader that follows the cursors reads every record once, in order, while more
keep arriving. A cursor older than the newest entry trimmed away would skip records: it
is refused (`CursorExpiredError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis.asyncio import Redis

from server.records.record import Record, decode_batch
from server.records.record_keys import STREAM_KEY, TRIMMED_KEY

CURSOR_PATTERN = re.compile(r"^(\d{1,19})-(\d{1,19})(?:\.(\d{1,9}))?$")
# The cursor before every record.
START = "0-0"
# Entries read per round trip: each holds up to a flush's batch of records.
_ENTRIES_PER_READ = 8


class CursorExpiredError(Exception):
    """Records after the cursor were trimmed away before it was read."""


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[tuple[str, Record]]  # (id, record), oldest first
    cursor: str  # the `after` of the next page


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def read_page(redis: Redis, after: str | None, limit: int) -> Page:
    """Up to `limit` records after the cursor `after` (from the oldest kept when None).
    Raises CursorExpiredError when records after `after` are no longer kept."""
    match = CURSOR_PATTERN.match(after or START)
    if match is None:
        raise ValueError(f"not a cursor: {after!r}")
    entry = f"{match[1]}-{match[2]}"
    read_up_to = None if match[3] is None else int(match[3])  # within `entry`
    start = entry if read_up_to is not None else f"({entry}"
    page: list[tuple[str, Record]] = []
    cursor = after or START
    first = True
    while len(page) < limit:
        async with redis.pipeline(transaction=True) as pipe:  # no trim in between
            pipe.get(TRIMMED_KEY)
            pipe.xrange(STREAM_KEY, min=start, max="+", count=_ENTRIES_PER_READ)
            trimmed, entries = await pipe.execute()
        cut = None if trimmed is None else _entry_order(trimmed.decode())
        if first:
            position = _entry_order(entry)
            if (
                after is not None
                and cut is not None
                and (position < cut or (position == cut and read_up_to is not None))
            ):
                raise CursorExpiredError(after)
        elif cut is not None and _entry_order(start.lstrip("(")) <= cut:
            break  # trimmed while this page was read: the next call says so
        first = False
        if not entries:
            break
        for raw_id, fields in entries:
            if len(page) == limit:
                return Page(page, cursor)
            entry_id = raw_id.decode()
            try:
                batch = decode_batch(fields[b"r"])
            except (KeyError, ValueError, TypeError):
                batch = []  # not an entry this version writes; the cursor moves past it
            skip = read_up_to + 1 if entry_id == entry and read_up_to is not None else 0
            for index in range(skip, len(batch)):
                page.append((f"{entry_id}.{index}", batch[index]))
                if len(page) == limit and index < len(batch) - 1:
                    return Page(page, f"{entry_id}.{index}")
            cursor = entry_id
            start = f"({entry_id}"
    return Page(page, cursor)
