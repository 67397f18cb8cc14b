"""The email-facing URLs: `GET /i/{block}.{ext}` (the image) and `GET /c/{block}` (the click).

These answer mail clients and their proxies, which cache errors: an image URL always
answers 200 with an image (404 with a transparent pixel only for an unknown block), and
never with validators that would let a proxy keep a stale render.
"""

from __future__ import annotations

import time

from aiohttp import web
from multidict import CIMultiDict, istr

from content_sources.client_address import client_ip
from renderers.encode import CONTENT_TYPES, TRANSPARENT_GIF
from server import metrics
from server.api.app_state import BLOCKS, CURRENT_OUTCOME, OPEN_LOG, OPENS, REDIS, SETTINGS
from server.blocks.compiling import literal_format
from server.blocks.polls import vote_in, vote_target
from server.opens import ImageAnswer, OpenQuery
from server.opens.query import query_pairs
from server.web.request_handling import REQUEST_ID_HEADER, SERVER_NAME, begin_request

routes = web.RouteTableDef()

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


def _client_ip(request: web.Request) -> str | None:
    """The reader's address: `X-Forwarded-For` counts only from `ATOPEN_TRUSTED_PROXIES`."""
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
    return client_ip(request.remote, forwarded or None, request.app[SETTINGS].trusted_proxies)


def _unknown_image(request_id: str) -> web.Response:
    return web.Response(
        status=404,
        body=TRANSPARENT_GIF,
        content_type="image/gif",
        headers={**NO_CACHE, REQUEST_ID_HEADER: request_id},
    )


# The image formats by URL extension, as `literal_format` reads them.
FORMATS = {ext: literal_format(ext) for ext in ("png", "jpg", "jpeg", "gif")}


@routes.get(r"/i/{block}.{ext:png|jpg|jpeg|gif}")
async def image(request: web.Request) -> web.Response:
    request_id = begin_request(request)
    match_info = request.match_info
    fmt = FORMATS.get(match_info["ext"])
    app = request.app
    prepared = app[BLOCKS].get(match_info["block"])
    if prepared is None or fmt is None:
        metrics.IMAGE_OUTCOMES["unknown_block"].inc()
        return _unknown_image(request_id)
    started = time.perf_counter()
    url = request.rel_url
    raw_query = url.raw_query_string
    opens = app[OPENS]
    user_agent = request.headers.get("User-Agent")  # for the open, and for its record
    admitted = None
    if prepared.personal_variants:
        # Drawn per recipient: admitted before its query is decoded, since under overload
        # most such opens are refused, and a refusal should cost little more than a lookup.
        admitted = opens.admit(prepared, fmt, raw_query)
    if isinstance(admitted, ImageAnswer):
        answer = admitted
    else:
        pairs = query_pairs(raw_query)
        query = OpenQuery.parse(pairs)
        path = url.raw_path
        now = None
        if admitted is None:
            now = opens.image_now(prepared, fmt, query, path=path, raw_query=raw_query, pairs=pairs)
        if isinstance(now, ImageAnswer):
            answer = now
        else:
            answer = await opens.image(
                prepared,
                fmt,
                query,
                path=path,
                raw_query=raw_query,
                pairs=pairs,
                user_agent=user_agent,
                client_ip=_client_ip(request) if prepared.reads_address else None,
                verified=now,
                admitted=admitted,
            )
    CURRENT_OUTCOME.set(answer.outcome)
    metrics.count_image(answer.outcome, time.perf_counter() - started)
    app[OPEN_LOG].answered(
        prepared.block.id,
        prepared.block.version,
        answer.variant,
        answer.recipient,
        user_agent,
        answer.country,
        answer.outcome,
    )
    response = web.Response(body=answer.body, headers=IMAGE_HEADERS[fmt])
    headers = response.headers
    headers.add(VARIANT_HEADER, answer.variant)
    headers.add(_REQUEST_ID_HEADER, request_id)
    return response


# `[\s\S]`, not `.`: a path with a line break is an unknown image too (a 404 pixel).
@routes.get(r"/i/{anything:[\s\S]*}")
async def unknown_image(request: web.Request) -> web.Response:
    """Any other image path (an unknown format, say) is an unknown block: the 404 pixel."""
    return _unknown_image(begin_request(request))


@routes.get("/c/{block}")
async def click(request: web.Request) -> web.Response:
    request_id = begin_request(request)
    prepared = request.app[BLOCKS].get(request.match_info["block"])
    if prepared is None:
        return web.Response(
            status=404, text="unknown block\n", headers={**NO_CACHE, REQUEST_ID_HEADER: request_id}
        )
    started = time.perf_counter()
    url = request.rel_url
    raw_query = url.raw_query_string
    pairs = query_pairs(raw_query)
    opens = request.app[OPENS]
    query = OpenQuery.parse(pairs)
    verified = opens.verified(prepared, url.raw_path, raw_query, pairs)
    user_agent = request.headers.get("User-Agent")  # for the click, and for its record
    vote = vote_in(pairs)
    location = None
    if vote is not None:  # a poll's vote (section 6 of the contract)
        recipient = query.recipient if verified else None
        location = await vote_target(request.app[REDIS], prepared, recipient, vote)
    if location is None:
        location = await opens.click(
            prepared,
            query,
            verified=verified,
            user_agent=user_agent,
            client_ip=_client_ip(request),
        )
    metrics.CLICKS.inc()
    metrics.CLICK_SECONDS.observe(time.perf_counter() - started)
    request.app[OPEN_LOG].clicked(
        prepared.block.id,
        prepared.block.version,
        query.recipient if verified else None,
        location,
        user_agent,
        request.method == "HEAD",
    )
    return web.Response(
        status=302, headers={**NO_CACHE, "Location": location, REQUEST_ID_HEADER: request_id}
    )
