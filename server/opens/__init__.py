"""One email open, from the request to the image bytes or the click's target, in stages:

    admit  -> gather  -> decide  -> draw  -> answer
    (admit.py, gather.py, decide.py, draw.py, answer.py)

1. admit: the open's deadline, and its place in the render queue; when the renders
   ahead would not leave it time, the pre-rendered default at once.
2. gather: the store round trip, the stores near the reader, live HTTP data.
3. decide: the variant, from that data alone (pure). When it finds something missing
   that a fetch can bring (a SKU a rule computed, a remote image), gather fetches it
   and decide runs again, a bounded number of times.
4. draw: the image, pre-rendered, cached, or rendered off the event loop.
5. answer: the open is remembered (for the click, the impression, the last place seen).

An open of a block drawn per recipient is admitted first (`admit`), before its query is
even decoded: under overload most are refused, and a refusal then costs a lookup and
the default's bytes.

An open of a block whose rules read nothing but reads shared by all its opens (its
inventory items) skips gather and decide while the same replies are kept: it takes the
choice an earlier open made from them (shared.py). When that choice's image is in memory
too, and the URL is signed as atopen signs URLs, `image_now` answers the open at once,
without creating a coroutine or decoding its query; every other open goes through
`image`.

No stage calls back into an earlier one; `Opens` below runs them top to bottom. Any
failure on the way serves the block's pre-rendered default: an image request never gets
anything but an image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from redis.asyncio import Redis

from content_sources import anonymous_context
from content_sources.deadlines import seconds_left
from content_sources.http_data import HttpData
from content_sources.redis_batch import StoreBatcher
from content_sources.redis_keys import remembered_key
from content_sources.remembered import decode_memory
from content_sources.rule_context import RuleContext
from content_sources.source import OpenRequest, Source
from renderers.fields import Resources
from renderers.plan import ImageFormat
from server.blocks.experiments import assign
from server.blocks.selection import Choice, safe_link
from server.blocks.snapshot import PreparedBlock
from server.opens.admit import Admission, Admitted
from server.opens.answer import Recorder, country_of, fallback, link_of
from server.opens.decide import ChoiceMemo, Chosen, Decision, decide, decide_unsigned
from server.opens.draw import Drawer
from server.opens.gather import Gathered, Gatherer
from server.opens.loop_lag import LoopLag
from server.opens.query import ImageAnswer, OpenQuery, dpr_of, reader_of
from server.opens.remote_images import RemoteImages
from server.opens.render_cache import RenderCache
from server.opens.render_pool import OverloadedError, RenderPool
from server.opens.shared import SharedChoices
from server.outcomes import FallbackReason, Outcome
from server.records.open_log import OpenLog
from server.settings import Settings
from server.signing import Signer

__all__ = ["ImageAnswer", "OpenQuery", "Opens"]

log = logging.getLogger("atopen.opens")

# Decisions at most this many times per open: each may find more to fetch (a computed
# SKU, the next variant's remote images); the last decides with what is there.
MAX_DECISIONS = 3


@dataclass(frozen=True, slots=True)
class OpensSettings:
    """What the operator sets for opens (from the server's settings)."""

    deadline_ms: int  # how long an open may take before it gets the default image
    click_memory_s: int  # how long what an open showed is remembered for its clicks
    last_seen_s: int  # how long where a real open placed the recipient is kept
    inventory_max_age_ms: int  # how old a shared inventory read may be when reused

    @classmethod
    def of(cls, settings: Settings) -> OpensSettings:
        return cls(
            deadline_ms=settings.render_deadline_ms,
            click_memory_s=settings.click_memory_days * 86_400,
            last_seen_s=settings.last_seen_days * 86_400,
            inventory_max_age_ms=settings.inventory_max_age_ms,
        )


class Opens:
    """Answers image opens, clicks and previews for the blocks in the snapshot."""

    def __init__(
        self,
        *,
        redis: Redis,
        signer: Signer,
        sources: Sequence[Source],
        resources: Resources,
        pool: RenderPool,
        cache: RenderCache,
        http_data: HttpData,
        remote_images: RemoteImages,
        open_log: OpenLog,
        loop_lag: LoopLag,
        settings: OpensSettings,
    ) -> None:
        self._redis = redis
        self._batcher = StoreBatcher(redis, shared_max_age_s=settings.inventory_max_age_ms / 1000)
        self._signer = signer
        self._sources = tuple(sources)
        self._resources = resources
        self._deadline_s = settings.deadline_ms / 1000
        self._click_memory_s = settings.click_memory_s
        self._admission = Admission(pool, loop_lag, settings.deadline_ms)
        self._gatherer = Gatherer(
            redis=redis,
            batcher=self._batcher,
            sources=self._sources,
            http_data=http_data,
            remote_images=remote_images,
            deadline_ms=settings.deadline_ms,
        )
        self._memo = ChoiceMemo(self._sources)
        self._shared = SharedChoices(self._sources, self._batcher)
        self._drawer = Drawer(pool, cache)
        self._recorder = Recorder(open_log, settings.last_seen_s)

    async def connect(self) -> None:
        """Open the opens' own store connection; StoreConnectionError if unreachable."""
        await self._batcher.connect()

    def close(self) -> None:
        """Close the opens' own store connection (the shared client is the caller's)."""
        self._batcher.close()

    def inventory_changed(self) -> None:
        """This process changed the inventory: the next opens read it afresh."""
        self._batcher.forget_shared()

    def verified(
        self, prepared: PreparedBlock, path: str, raw_query: str, pairs: Sequence[tuple[str, str]]
    ) -> bool:
        """Whether the open is signed: by a URL signature, else by the recipient token of
        its `r`. Only a signed open is personalised for its `r`: a public block's unsigned
        opens run its rules too, but as nobody's (see `_request`)."""
        signer = self._signer
        return signer.verify_request(path, raw_query, pairs) or signer.verify_recipient(pairs)

    def admit(
        self, prepared: PreparedBlock, fmt: ImageFormat, raw_query: str
    ) -> Admitted | ImageAnswer:
        """Stage 1 of an open: its deadline and, for a block drawn per recipient, its
        place in the render queue (for `image`); or the pre-rendered default at once
        when the renders ahead would not leave it time (unsigned as far as anyone
        checked: its signature is not checked). Called before the query is decoded."""
        admitted = self._admission.admit(prepared)
        if admitted is None:
            return fallback(prepared, fmt, dpr_of(raw_query), FallbackReason.OVERLOADED)
        return admitted

    def image_now(
        self, prepared: PreparedBlock, fmt: ImageFormat, path: str, raw_query: str
    ) -> ImageAnswer | bool | None:
        """The answer of an open with nothing to wait for, without a coroutine and before
        its query is decoded: an open signed as atopen signs URLs (`Signer.signed_query`)
        of a block whose shared choice is made (shared.py) and whose image is in this
        process's memory, answered as `image` would.

        Otherwise what `image` is to be given as `verified`: True when the open is
        signed, None when that is for `image` to tell (a recipient token, a query in
        another order, an unsigned open of a public block; or admission comes first,
        for the opens that may render)."""
        if not self._admission.lets_in_placeless(prepared):
            return None
        try:
            canonical = self._signer.signed_query(path, raw_query)
        except Exception:
            return None  # `image` checks it again, and logs why it cannot
        if canonical is None:
            return None
        try:
            shared = self._shared.of(prepared)
            decided = None if shared is None else shared.decided()
            if decided is None:
                return True
            recipient, dpr = reader_of(canonical)
            body = self._drawer.kept(prepared, decided, fmt, dpr)
        except Exception:
            return True  # `image` fails the same way, and serves the default
        if body is None:
            return True
        # No rule context was built: nothing of the reader's place to remember.
        variant = decided.choice.variant
        return ImageAnswer(body, variant, Outcome.CACHED, recipient, None, decided.link)

    async def image(
        self,
        prepared: PreparedBlock,
        fmt: ImageFormat,
        query: OpenQuery,
        *,
        path: str,
        raw_query: str,
        pairs: Sequence[tuple[str, str]],
        user_agent: str | None,
        client_ip: str | None = None,
        verified: bool | None = None,
        admitted: Admitted | None = None,
    ) -> ImageAnswer:
        """The image for this open; the pre-rendered default on any failure or overrun.
        `verified` is whether the open is signed, when `image_now` found out already;
        `admitted`, what `admit` gave it, if it was asked."""
        if admitted is None:
            # Not admitted by the route (a block drawn the same for all): its query is
            # decoded already, and its scale is there.
            admitted = self._admission.admit(prepared)
            if admitted is None:
                return fallback(prepared, fmt, query.dpr, FallbackReason.OVERLOADED)
        recipient: str | None = None
        try:
            if verified is None:
                verified = self.verified(prepared, path, raw_query, pairs)
            deadline = admitted.deadline
            if verified and admitted.place is not None:
                await admitted.place.turn(deadline)
                # Its turn came in time: what it spends from now on is not thrown away
                # for a small overrun (see admit.FINISH_GRACE_SHARE).
                deadline = admitted.finish_by
            recipient = query.recipient if verified else None
            context = RuleContext()
            memo = link = None
            shared = self._shared.of(prepared) if verified or prepared.block.public else None
            kept, decided = (None, None) if shared is None else shared.now()
            if decided is not None:
                # The same shared data as an earlier open: its choice, without the context.
                choice, memo, link, _ = decided
            elif not verified and not prepared.block.public:
                admitted.release()  # the unsigned default is drawn from no data
                request = self._request(prepared, query, verified, user_agent, client_ip)
                choice = self._unsigned(prepared, request)
            else:
                request = self._request(prepared, query, verified, user_agent, client_ip)
                gathered = await self._gatherer.gather(request, prepared.block, {}, deadline)
                choice, memo = await self._decide(prepared, gathered, deadline)
                context = gathered.context
                if shared is not None and kept is not None and memo is not None:
                    shared.remember(kept, choice, memo)
            body, outcome = await self._drawer.draw(
                prepared,
                choice,
                fmt,
                query.dpr,
                deadline=deadline,
                memo=memo,
                place=admitted.place,
            )
        except TimeoutError:
            return fallback(prepared, fmt, query.dpr, FallbackReason.DEADLINE, recipient)
        except OverloadedError:
            return fallback(prepared, fmt, query.dpr, FallbackReason.OVERLOADED, recipient)
        except Exception as exc:  # never an error image: log, then serve the default
            log.warning("open of %s fell back to the default: %r", prepared.block.id, exc)
            return fallback(prepared, fmt, query.dpr, FallbackReason.ERROR, recipient)
        finally:
            admitted.release()  # unused: the image came from a cache
        self._recorder.seen(recipient, context)
        if link is None:
            link = link_of(prepared, choice)
        return ImageAnswer(body, choice.variant, outcome, recipient, country_of(context), link)

    async def click(
        self,
        prepared: PreparedBlock,
        query: OpenQuery,
        *,
        verified: bool,
        user_agent: str | None,
        client_ip: str | None = None,
    ) -> str:
        """Where a click goes: the remembered render's link, else what would render now."""
        if not verified and not prepared.block.public:
            return prepared.default_link
        request = self._request(prepared, query, verified, user_agent, client_ip)
        try:
            async with asyncio.timeout(self._deadline_s):
                link = None
                if request.recipient is not None:
                    link = await self._recall_link(prepared.block.id, request.recipient, request)
                if link is None:
                    until = time.monotonic() + self._deadline_s
                    gathered = await self._gatherer.gather(request, prepared.block, {}, until)
                    choice, _ = await self._decide(prepared, gathered, until)
                    link = choice.link
        except Exception as exc:
            log.warning("click on %s fell back to the default link: %r", prepared.block.id, exc)
            return prepared.default_link
        return safe_link(prepared.block, link) or prepared.default_link

    async def preview(
        self, prepared: PreparedBlock, request: OpenRequest, overrides: Mapping[str, object]
    ) -> Choice:
        """The variant `request` would get (no deadline, nothing remembered)."""
        gathered = await self._gatherer.gather(request, prepared.block, overrides, None)
        choice, _ = await self._decide(prepared, gathered, None)
        return choice

    async def render_choice(
        self, prepared: PreparedBlock, choice: Choice, fmt: ImageFormat, dpr: int
    ) -> bytes:
        body, _ = await self._drawer.draw(prepared, choice, fmt, dpr, deadline=None)
        return body

    def link_of(self, prepared: PreparedBlock, choice: Choice) -> str:
        return link_of(prepared, choice)

    async def _decide(
        self, prepared: PreparedBlock, gathered: Gathered, deadline: float | None
    ) -> Chosen:
        """Decide, fetching what each decision finds missing; the choice, and the key it
        is remembered by when it holds for every open with the same shared data."""
        block = prepared.block
        memo = None if gathered.overrides else self._memo.key(prepared, gathered.context)
        if memo is not None and (remembered := self._memo.get(memo)) is not None:
            return Chosen(remembered, memo)
        assignment = assign(block.split, block.id, gathered.request.recipient)
        for attempt in range(1, MAX_DECISIONS + 1):
            final = attempt == MAX_DECISIONS
            args = (block, gathered.context, self._resources, gathered.images, assignment)
            decision: Decision
            if block.rules_may_run_long:
                # A rule that loops runs in a thread, within its time budget: the event
                # loop goes on serving the other opens meanwhile. The open waits for it
                # no longer than its deadline (each of many rules has its own budget).
                async with asyncio.timeout(seconds_left(deadline)):
                    decision = await asyncio.to_thread(decide, *args, final=final)
            else:
                decision = decide(*args, final=final)
            if decision.needs is None:
                break
            await self._gatherer.more(gathered, decision.needs, block, deadline)
        choice = decision.choice
        if gathered.data_trace:
            choice = replace(choice, data_trace=gathered.data_trace)
        if gathered.computed_skus:
            memo = None
        elif memo is not None:
            self._memo.put(memo, choice)
        return Chosen(choice, memo)

    def _unsigned(self, prepared: PreparedBlock, request: OpenRequest) -> Choice:
        context = anonymous_context(self._sources, request)
        return decide_unsigned(prepared.block, context, self._resources)

    def _request(
        self,
        prepared: PreparedBlock,
        query: OpenQuery,
        verified: bool,
        user_agent: str | None,
        client_ip: str | None,
    ) -> OpenRequest:
        at = datetime.now(UTC)
        if not verified and not prepared.block.public:
            return OpenRequest(at=at, block_tz=prepared.block.tz, user_agent=user_agent)
        return OpenRequest(
            at=at,
            block_id=prepared.block.id,
            # Unsigned (a public block): anyone may have written `r`, so the open reads
            # and remembers nothing of that recipient; the URL's own fields are used.
            recipient=query.recipient if verified else None,
            params=query.params,
            tz=query.tz,
            block_tz=prepared.block.tz,
            user_agent=user_agent,
            client_ip=client_ip,
            skus=prepared.block.skus,
            poll_options=prepared.block.poll.options if prepared.block.poll else (),
        )

    async def _recall_link(self, block_id: str, recipient: str, request: OpenRequest) -> str | None:
        raw = await self._redis.hget(remembered_key(recipient), block_id)
        entry = decode_memory(raw, request.at, self._click_memory_s)
        return str(entry["link"]) if entry is not None else None
