"""Stage 3 of an open, decide: the variant, from the gathered data alone.

Pure and synchronous: no I/O, no clock but the open's own. It either decides for good or
says what it found missing (`Needs`), which the gather stage fetches before it decides
again. The marketer's rules it runs are bounded in time (`content_sources.expressions`); a block
whose rules may run long is decided off the event loop by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NamedTuple

from content_sources.lru import LRU
from content_sources.rule_context import RuleContext
from content_sources.source import Reach, Source
from renderers.fields import Resources
from renderers.layers import has_ended
from renderers.resources import Asset
from server.blocks.compiling import Block
from server.blocks.experiments import Assignment
from server.blocks.selection import Choice, choose_variant
from server.blocks.snapshot import PreparedBlock
from server.opens.gather import Needs
from server.opens.remote_images import OpenResources, RemoteImageError

# The variant that replaces a countdown's once its time is up (if the block has one).
EXPIRED = "expired"
# Choices remembered for blocks whose choice depends only on shared data.
MAX_REMEMBERED_CHOICES = 4096


@dataclass(slots=True)
class Decision:
    """The variant chosen; with `needs`, chosen without data a fetch could still bring."""

    choice: Choice
    needs: Needs | None = None


def decide(
    block: Block,
    context: RuleContext,
    resources: Resources,
    images: Mapping[str, Asset | RemoteImageError],
    assignment: Assignment,
    *,
    final: bool,
) -> Decision:
    """The first variant that applies and resolves, else the default, with the rules of
    experiments (`assignment`), sticky blocks and expired countdowns.

    `final`: decide for good with what is there (a remote image not fetched makes its
    variant fall through); otherwise report what is missing as `needs`.
    """
    now = context.now or datetime.now(UTC)
    shown = context.last_shown
    keep = shown.get("variant") if block.sticky and shown is not None else None
    holdout = assignment.holdout
    # `expired` is never chosen in order: it replaces a countdown whose time is up.
    excluded = assignment.excluded | {EXPIRED}
    open_resources = OpenResources(resources, images, final=final)
    choice = choose_variant(
        block,
        context,
        open_resources,
        default_only=holdout,
        excluded=excluded,
        keep=keep if isinstance(keep, str) and keep not in excluded else None,
        default_reason="experiment holdout" if holdout else "no other variant applied",
    )
    if has_ended(choice.layers, now) and any(v.name == EXPIRED for v in block.variants):
        expired = choose_variant(block, context, open_resources, keep=EXPIRED, excluded=excluded)
        if expired.variant == EXPIRED:
            choice = expired
    choice = replace(choice, now=now)
    inventory = context.inventory
    skus = inventory.unfetched if inventory is not None else set()
    if final or not (skus or open_resources.pending):
        return Decision(choice)
    return Decision(choice, Needs(frozenset(skus), frozenset(open_resources.pending)))


def decide_unsigned(block: Block, context: Mapping[str, object], resources: Resources) -> Choice:
    """An open without a valid signature gets the default, drawn with no recipient data."""
    return choose_variant(block, context, resources, default_only=True, default_reason="unsigned")


# The shared data a choice was made from (`ChoiceMemo.key`): equal keys, equal choices.
MemoKey = tuple[object, ...]


class Chosen(NamedTuple):
    """A decided open's variant, and the key it is remembered by for the opens with the
    same shared data (None when it holds for this open only)."""

    choice: Choice
    memo: MemoKey | None


class ChoiceMemo:
    """Choices of blocks whose choice depends only on shared data (live stock, the
    client, the second): equal data make equal choices, so thousands of recipients
    share one evaluation of the rules."""

    def __init__(self, sources: Sequence[Source], size: int = MAX_REMEMBERED_CHOICES) -> None:
        self._choices: LRU[MemoKey, Choice] = LRU(size)
        # What each shared source adds to the key, from its value.
        self._parts = tuple(
            (source.name, source.memo_part)
            for source in sources
            if source.reach is Reach.SHARED and source.memo_part is not None
        )

    def key(self, prepared: PreparedBlock, context: RuleContext) -> MemoKey | None:
        """The shared data the block's choice depends on; None when it depends on more."""
        if not prepared.choice_is_shared:
            return None
        return (
            prepared.block.id,
            prepared.block.version,
            *(part(context.get(name)) for name, part in self._parts),
        )

    def get(self, key: MemoKey) -> Choice | None:
        return self._choices.get(key)

    def put(self, key: MemoKey, choice: Choice) -> None:
        self._choices.put(key, choice)
