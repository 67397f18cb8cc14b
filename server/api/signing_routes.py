"""`POST /api/v1/sign`: sign email-facing URLs with the current key."""

from __future__ import annotations

from aiohttp import web

from server.api.app_state import SETTINGS, SIGNER
from server.api.errors import invalid, json_response, read_list_field

routes = web.RouteTableDef()
MAX_URLS = 10_000


@routes.post("/api/v1/sign")
async def sign_urls(request: web.Request) -> web.Response:
    urls = await read_list_field(request, "urls", MAX_URLS, "URLs")
    signer = request.app[SIGNER]
    base_url = request.app[SETTINGS].base_url
    signed: list[str] = []
    for i, url in enumerate(urls):
        if not isinstance(url, str):
            raise invalid(f"urls[{i}]", "must be a string")
        try:
            url_signed = signer.sign_url(url)
        except ValueError as exc:
            raise invalid(f"urls[{i}]", str(exc)) from None
        # A path alone gets the public base URL, ready to paste into an email.
        signed.append(base_url + url_signed if url_signed.startswith("/") else url_signed)
    return json_response({"urls": signed})
