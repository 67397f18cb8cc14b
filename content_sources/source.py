"""What every content source is: a name, its share of the open's Redis round trip, and a
function that turns the replies into the value rules and templates see.

An open asks each source the block uses for its commands, sends them all in one
pipelined round trip, and hands each source its replies. A source never raises on bad
or absent data: it gives a value in which that data is missing, so the variant that
needs it falls through (contract 4).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from redis.asyncio import Redis

if TYPE_CHECKING:
    from content_sources.rule_context import RuleContext

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


class Reach(Enum):
    """Whose a source's value is: what may be shared between opens that read it."""

    # One recipient's own (or where they are): an image whose templates read it is theirs.
    PERSONAL = "personal"
    # The same for every recipient at one moment: a choice made from these names alone
    # is made once for many opens (remembered by the sources' `memo_part`s).
    SHARED = "shared"
    # Differs between recipients, but many share each value (segments, the nearest shops,
    # a poll's tally): neither kept as personal nor remembered as shared.
    GROUPED = "grouped"


class Source(Protocol):
    """One name in the rule context (`profile`, `events`, ...), with its traits.

    Every trait is declared by the source's class; the registry derives from them which
    sources an open builds and what opens may share (`tests/contracts/test_sources.py`).
    """

    @property
    def name(self) -> str: ...

    @property
    def depends_on(self) -> frozenset[str]:
        """The names this source's value is built from: an open that needs it builds them."""
        ...

    @property
    def reach(self) -> Reach: ...

    @property
    def always_build(self) -> bool:
        """Built at every open, whether or not the block reads the name."""
        ...

    @property
    def shared_reads(self) -> bool:
        """Its commands are the same for every recipient, so their replies may be shared
        by opens for a short while."""
        ...

    @property
    def reads_address(self) -> bool:
        """Its value needs the reader's address (`OpenRequest.client_ip`)."""
        ...

    @property
    def after_round_trip(self) -> Callable[[Redis, RuleContext], Awaitable[None]] | None:
        """A second step some opens need once the round trip's values are built (a read
        that needs them), which updates the context; None for most sources. It never
        raises a store failure: the value it would complete stays missing."""
        ...

    @property
    def memo_part(self) -> Callable[[object], Hashable] | None:
        """For a shared source, what its value adds to the key a choice is remembered by
        (equal parts, equal choices); None for the others."""
        ...

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        """Redis commands for the shared round trip; empty when none are needed."""
        ...

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        """The value templates see, from this source's replies and the sources built before."""
        ...
