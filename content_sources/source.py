"""What every content source is: a name, its share of the open's Redis round trip, and a
function that turns the replies into the value rules and templates see.

An open asks each source the block uses for its commands, sends them all in one
pipelined round trip, and hands each source its replies. A source never raises on bad
or absent data: it gives a value in which that data is missing, so the variant that
needs it falls through (contract 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

RedisCommand = tuple[str | bytes | int | float, ...]


@dataclass(slots=True)
class OpenRequest:
    """What one open tells us, after the signature check.

    `recipient` and `params` are empty when the URL's signature did not verify. Treat it
    as read-only (`dataclasses.replace` for a changed copy); it is not frozen because
    one is made per open, and a frozen dataclass is four times as slow to make.
    """

    at: datetime
    block_id: str | None = None
    recipient: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    tz: str | None = None
    block_tz: str | None = None
    user_agent: str | None = None
    client_ip: str | None = None
    skus: frozenset[str] = frozenset()
    # The block's poll options, in order (`poll`): none when the block has no poll.
    poll_options: tuple[str, ...] = ()


class Source(Protocol):
    """One name in the rule context (`profile`, `events`, ...).

    Two optional attributes: `always_build` (built at every open, whether or not the
    block reads the name) and `shared_reads` (its commands are the same for every
    recipient, so their replies may be shared by opens for a short while).
    """

    @property
    def name(self) -> str: ...

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        """Redis commands for the shared round trip; empty when none are needed."""
        ...

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        """The value templates see, from this source's replies and the sources built before."""
        ...
