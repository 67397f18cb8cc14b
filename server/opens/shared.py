"""Opens of blocks whose rules read only reads shared by every open: the choice, without
the rule context.

A block whose rules read nothing but `shared_reads` sources (a block's inventory items)
gets the same choice at every open for as long as the store batcher keeps the same
replies to those reads (`ATOPEN_INVENTORY_MAX_AGE_MS`). Such an open takes the choice an
earlier open made from those very replies, without building the rule context, decoding
the items or fingerprinting them. The first open after the replies are read again
decides as any other, and its choice is taken from then on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from content_sources import active_sources
from content_sources.redis_batch import KeptReplies, StoreBatcher
from content_sources.source import OpenRequest, RedisCommand, Source
from renderers.plan import ImageFormat
from server.blocks.selection import Choice
from server.blocks.snapshot import PreparedBlock
from server.opens.answer import link_of
from server.opens.decide import MemoKey

# Blocks whose reads and choice are followed; past that, forgotten all at once (the
# next open of each block decides as any other).
MAX_BLOCKS = 4096
# What stands for the replies of a block that reads nothing at all.
_NO_READS = object()


class Decided(NamedTuple):
    """A choice made from a block's shared reads, the key it is remembered by
    (`ChoiceMemo`), where its click goes, and the render cache's keys of its images by
    format and scale, as opens find them (`Drawer.kept`)."""

    choice: Choice
    memo: MemoKey
    link: str
    image_keys: dict[tuple[ImageFormat, int], str]


class SharedReads:
    """One block's shared reads, and the choice made from their kept replies."""

    __slots__ = ("_batcher", "_decided", "_replies", "commands", "prepared")

    def __init__(
        self, prepared: PreparedBlock, commands: tuple[RedisCommand, ...], batcher: StoreBatcher
    ) -> None:
        self.prepared = prepared
        self.commands = commands
        self._batcher = batcher
        self._replies: object | None = None
        self._decided: Decided | None = None

    def kept(self) -> object | None:
        """What stands for the replies kept now (the same object for as long as the same
        replies are), or None when they are not kept or too old."""
        if not self.commands:
            return _NO_READS
        return self._batcher.kept_replies(self.commands)

    def now(self) -> tuple[object | None, Decided | None]:
        """The replies kept now (as `kept`), and the choice made from them if one was."""
        kept = self.kept()
        return kept, self._decided if kept is not None and kept is self._replies else None

    def decided(self) -> Decided | None:
        """The choice made from the replies kept now, if one was (`now` without the
        replies): while the replies it was made from are fresh, they are the ones kept,
        and nothing needs looking up."""
        replies = self._replies
        if replies is _NO_READS or (
            isinstance(replies, KeptReplies) and self._batcher.still_fresh(replies)
        ):
            return self._decided
        return None

    def remember(self, kept: object, choice: Choice, memo: MemoKey) -> None:
        """`choice`, remembered by `memo`, was made from the replies `kept` stands for;
        kept unless other replies were read meanwhile."""
        if self.kept() is kept:
            self._replies = kept
            self._decided = Decided(choice, memo, link_of(self.prepared, choice), {})


class SharedChoices:
    def __init__(self, sources: Sequence[Source], batcher: StoreBatcher) -> None:
        self._sources = tuple(sources)
        self._batcher = batcher
        # Per block id: the prepared block (a new version is followed afresh) and its reads.
        self._blocks: dict[str, tuple[PreparedBlock, SharedReads | None]] = {}

    def of(self, prepared: PreparedBlock) -> SharedReads | None:
        """The block's shared reads; None when its choice depends on more than those."""
        followed = self._blocks.get(prepared.block.id)
        if followed is not None and followed[0] is prepared:
            return followed[1]
        return self._follow(prepared)

    def _follow(self, prepared: PreparedBlock) -> SharedReads | None:
        if len(self._blocks) >= MAX_BLOCKS:
            self._blocks.clear()
        block = prepared.block
        active = active_sources(self._sources, block.names)
        shared_only = prepared.choice_is_shared and all(source.shared_reads for source in active)
        reads = None
        if shared_only:
            # Shared reads are the same for every open of the block: any open's will do.
            request = OpenRequest(at=datetime.now(UTC), block_id=block.id, skus=block.skus)
            commands = tuple(c for source in active for c in source.commands(request))
            reads = SharedReads(prepared, commands, self._batcher)
        self._blocks[block.id] = (prepared, reads)
        return reads
