"""`POST /api/v1/tokens`: recipient tokens, for email services that cannot sign each URL.

A recipient's token (contract section 8) is stored once in the email service as a
custom field; any image or click URL with that `r` and `t` is then personalised without
a `sig`. See `server.signing.Signer.recipient_token`.
"""

from __future__ import annotations

from aiohttp import web

from server.api.app_state import SIGNER
from server.api.errors import json_response, read_list_field
from server.api.ids import recipient_id

routes = web.RouteTableDef()
MAX_RECIPIENTS = 10_000


@routes.post("/api/v1/tokens")
async def recipient_tokens(request: web.Request) -> web.Response:
    recipients = await read_list_field(request, "recipients", MAX_RECIPIENTS, "recipient ids")
    signer = request.app[SIGNER]
    tokens = {
        rid: signer.recipient_token(rid)
        for rid in (recipient_id(value, f"recipients[{i}]") for i, value in enumerate(recipients))
    }
    return json_response({"tokens": tokens})
