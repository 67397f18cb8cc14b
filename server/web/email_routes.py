"""The email-facing URLs: `GET /i/{block}.{ext}` (the image) and `GET /c/{block}` (the click).

These answer mail clients and their proxies, which cache errors: an image URL always
answers 200 with an image (404 with a transparent pixel only for an unknown block), and
never with validators that would let a proxy keep a stale render.

Their handlers hold the services they use, given once the app has started them, rather
than looking each up in the app's state at every open.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiohttp import web
from multidict import CIMultiDict, istr
from redis.asyncio import Redis

from content_sources.client_address import IPNetwork, client_ip
from renderers.encode import CONTENT_TYPES, TRANSPARENT_GIF
from server import metrics
from server.api.app_state import CURRENT_REQUEST_ID
from server.blocks.compiling import literal_format
from server.blocks.polls import vote_in, vote_target
from server.blocks.snapshot import BlockStore
from server.opens import ImageAnswer, OpenQuery, Opens
from server.opens.query import query_pairs
from server.records.open_log import OpenLog
from server.web.backpressure import RefusalPause
from server.web.request_handling import (
    REQUEST_ID_HEADER,
    SERVER_NAME,
    begin_request,
    request_id_of,
)

# Every email answer's headers but its own: no caching, and the server named without its
# versions (aiohttp adds its own `Server` only to a response that has none).
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Server": SERVER_NAME,
}
# An image's headers but for its variant and request id, made once per format: a
# response copies a multidict of its own kind faster than it builds one from a dict.
IMAGE_HEADERS = {
    fmt: CIMultiDict(
        {istr(name): value for name, value in {**NO_CACHE, "Content-Type": ctype}.items()}
    )
    for fmt, ctype in CONTENT_TYPES.items()
}
VARIANT_HEADER = istr("X-Atopen-Variant")
_REQUEST_ID_HEADER = istr(REQUEST_ID_HEADER)


class ImageResponse(web.Response):
    """An answer to an image request, and its outcome for the access line (None for an
    unknown block's pixel)."""

    outcome: str | None = None


def _unknown_image(request_id: str) -> web.Response:
    return web.Response(
        status=404,
        body=TRANSPARENT_GIF,
        content_type="image/gif",
        headers={**NO_CACHE, REQUEST_ID_HEADER: request_id},
    )


# The image formats by URL extension, as `literal_format` reads them.
FORMATS = {ext: literal_format(ext) for ext in ("png", "jpg", "jpeg", "gif")}


def _path_and_query(request: web.Request) -> tuple[str, str]:
    """The request's path and query string as sent, neither decoded: what URL signatures
    are made of. From the request target itself, which costs less than parsing it as a
    URL; as the URL has them when the target holds a fragment or is a whole URL."""
    target = request.raw_path
    if target.startswith("/") and "#" not in target:
        path, _, query = target.partition("?")
        return path, query
    url = request.rel_url
    return url.raw_path, url.raw_query_string


async def unknown_image(request: web.Request) -> web.Response:
    """Any other image path (an unknown format, say) is an unknown block: the 404 pixel."""
    return _unknown_image(begin_request(request))


class EmailRoutes:
    """The image and click handlers, and the services they answer with (`start`)."""

    # Set by `start`, as the app starts: aiohttp serves no request before.
    _blocks: BlockStore
    _opens: Opens
    _open_log: OpenLog
    _redis: Redis

    def __init__(self, trusted_proxies: Sequence[IPNetwork], refusal_pause: RefusalPause) -> None:
        self._trusted_proxies = trusted_proxies
        self._refusal_pause = refusal_pause

    def start(self, *, blocks: BlockStore, opens: Opens, open_log: OpenLog, redis: Redis) -> None:
        self._blocks = blocks
        self._opens = opens
        self._open_log = open_log
        self._redis = redis

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(r"/i/{block}.{ext:png|jpg|jpeg|gif}", self.image),
            # `[\s\S]`, not `.`: a path with a line break is an unknown image too (a 404 pixel).
            web.get(r"/i/{anything:[\s\S]*}", unknown_image),
            web.get("/c/{block}", self.click),
        ]

    def _client_ip(self, request: web.Request) -> str | None:
        """The reader's address: `X-Forwarded-For` counts only from `ATOPEN_TRUSTED_PROXIES`."""
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        return client_ip(request.remote, forwarded or None, self._trusted_proxies)

    async def image(self, request: web.Request) -> web.Response:
        # Set for log lines only if the open waits (below): until then it logs nothing.
        request_id = request_id_of(request)
        match_info = request.match_info
        fmt = FORMATS.get(match_info["ext"])
        prepared = self._blocks.get(match_info["block"])
        if prepared is None or fmt is None:
            metrics.IMAGE_OUTCOMES["unknown_block"].inc()
            return _unknown_image(request_id)
        started = time.perf_counter()
        path, raw_query = _path_and_query(request)
        opens = self._opens
        user_agent = request.headers.get("User-Agent")  # for the open, and for its record
        admitted = None
        if prepared.personal_variants:
            # Drawn per recipient: admitted before its query is decoded, since under
            # overload most such opens are refused, and a refusal should cost little more
            # than a lookup.
            admitted = opens.admit(prepared, fmt, raw_query)
        if isinstance(admitted, ImageAnswer):
            answer = admitted
            self._refusal_pause.after_refusal(request.transport)
        else:
            now = None
            if admitted is None:
                now = opens.image_now(prepared, fmt, path, raw_query)
            if isinstance(now, ImageAnswer):
                answer = now
            else:
                pairs = query_pairs(raw_query)
                query = OpenQuery.parse(pairs)
                # aiohttp runs each request in a task of its own: nothing to reset.
                CURRENT_REQUEST_ID.set(request_id)
                answer = await opens.image(
                    prepared,
                    fmt,
                    query,
                    path=path,
                    raw_query=raw_query,
                    pairs=pairs,
                    user_agent=user_agent,
                    client_ip=self._client_ip(request) if prepared.reads_address else None,
                    verified=now,
                    admitted=admitted,
                )
        metrics.IMAGE_ANSWERS.append((answer.outcome, time.perf_counter() - started))
        self._open_log.answered(prepared.block.id, prepared.block.version, answer, user_agent)
        response = ImageResponse(body=answer.body, headers=IMAGE_HEADERS[fmt])
        response.outcome = answer.outcome
        headers = response.headers
        headers.add(VARIANT_HEADER, answer.variant)
        headers.add(_REQUEST_ID_HEADER, request_id)
        return response

    async def click(self, request: web.Request) -> web.Response:
        request_id = begin_request(request)
        prepared = self._blocks.get(request.match_info["block"])
        if prepared is None:
            return web.Response(
                status=404,
                text="unknown block\n",
                headers={**NO_CACHE, REQUEST_ID_HEADER: request_id},
            )
        started = time.perf_counter()
        path, raw_query = _path_and_query(request)
        pairs = query_pairs(raw_query)
        opens = self._opens
        query = OpenQuery.parse(pairs)
        verified = opens.verified(prepared, path, raw_query, pairs)
        user_agent = request.headers.get("User-Agent")  # for the click, and for its record
        vote = vote_in(pairs)
        location = None
        if vote is not None:  # a poll's vote (section 6 of the contract)
            recipient = query.recipient if verified else None
            location = await vote_target(self._redis, prepared, recipient, vote)
        if location is None:
            location = await opens.click(
                prepared,
                query,
                verified=verified,
                user_agent=user_agent,
                client_ip=self._client_ip(request),
            )
        metrics.CLICKS.inc()
        metrics.CLICK_SECONDS.observe(time.perf_counter() - started)
        self._open_log.clicked(
            prepared.block.id,
            prepared.block.version,
            query.recipient if verified else None,
            location,
            user_agent,
            request.method == "HEAD",
        )
        return web.Response(
            status=302,
            headers={**NO_CACHE, "Location": location, REQUEST_ID_HEADER: request_id},
        )
