"""`GET /api/v1/blocks/{id}/snippet?esp=NAME`: a block's `<a><img></a>` HTML, ready to paste
into an email service's template, in that service's merge-tag syntax.

Most email services cannot compute an HMAC per URL, so the snippet carries the recipient
token `t` (contract section 8): one custom field per recipient, computed once by
`POST /api/v1/tokens` or `atopen sign --csv`. Braze's Liquid can compute HMAC-SHA256
itself (`hmac_sha256_base64`), so its answer also has a form with a per-URL `sig`, which
keeps the URL's `m.*` fields authenticated too.

Each service's merge tags are written as its documentation writes them; the tests hold
them against those documented examples.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

from aiohttp import web

from server.api.app_state import BLOCKS, SETTINGS
from server.api.errors import invalid, json_response, not_found
from server.blocks.snapshot import PreparedBlock

routes = web.RouteTableDef()

EspName = Literal["braze", "sfmc", "klaviyo", "mailchimp", "iterable", "hubspot", "generic"]
# Retina: the image is drawn at twice the block's size and shown at its size.
SNIPPET_DPR = 2
MAX_ALT_CHARS = 300
# What the service's template stores the signing key as, in the per-URL form: the
# marketer pastes a key of its own there (every key in ATOPEN_SECRET verifies).
KEY_PLACEHOLDER = "PASTE_AN_ATOPEN_SECRET_KEY_HERE"


@dataclass(frozen=True, slots=True)
class EmailService:
    """How one email service writes the recipient id and token into a URL."""

    name: EspName
    title: str
    # The merge expressions a URL carries: the recipient id `r` (URL-encoded where the
    # service can), and its token `t` (base64url: nothing to encode).
    r_tag: str
    t_tag: str
    # The custom fields the marketer keeps them in, as the service names its fields.
    r_field: str
    t_field: str
    # Statements the template needs before the HTML (AMPscript sets its variables there).
    preamble: str = ""


SERVICES: dict[str, EmailService] = {
    service.name: service
    for service in (
        EmailService(
            name="braze",
            title="Braze (Liquid)",
            r_tag="{{${user_id} | url_param_escape}}",
            t_tag="{{custom_attribute.${atopen_token}}}",
            r_field="external user ID (user_id)",
            t_field="custom attribute atopen_token",
        ),
        EmailService(
            name="sfmc",
            title="Salesforce Marketing Cloud (AMPscript)",
            r_tag="%%=v(@atopen_r)=%%",
            t_tag="%%=v(@atopen_t)=%%",
            r_field="subscriber key (_subscriberkey)",
            t_field="attribute atopen_token (profile or sendable data extension)",
            preamble=(
                "%%[\n"
                'SET @atopen_r = URLEncode(AttributeValue("_subscriberkey"), 1, 1)\n'
                'SET @atopen_t = AttributeValue("atopen_token")\n'
                "]%%\n"
            ),
        ),
        EmailService(
            name="klaviyo",
            title="Klaviyo",
            r_tag="{{ person|lookup:'atopen_id' }}",
            t_tag="{{ person|lookup:'atopen_token' }}",
            r_field="custom profile property atopen_id",
            t_field="custom profile property atopen_token",
        ),
        EmailService(
            name="mailchimp",
            title="Mailchimp",
            r_tag="*|URL:ATOPEN_ID|*",
            t_tag="*|ATOPEN_TOK|*",
            r_field="audience field with merge tag ATOPEN_ID",
            t_field="audience field with merge tag ATOPEN_TOK",
        ),
        EmailService(
            name="iterable",
            title="Iterable (Handlebars)",
            r_tag="{{#urlEncode}}{{userId}}{{/urlEncode}}",
            t_tag="{{atopen_token}}",
            r_field="userId",
            t_field="user profile field atopen_token",
        ),
        EmailService(
            name="hubspot",
            title="HubSpot (HubL)",
            r_tag="{{ contact.atopen_id|urlencode }}",
            t_tag="{{ contact.atopen_token }}",
            r_field="contact property atopen_id",
            t_field="contact property atopen_token",
        ),
        EmailService(
            name="generic",
            title="Any other service",
            r_tag="{{recipient_id}}",
            t_tag="{{atopen_token}}",
            r_field="the recipient's id, URL-encoded (replace {{recipient_id}})",
            t_field="the recipient's token (replace {{atopen_token}})",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Snippet:
    html: str
    signed_html: str | None


def snippet(prepared: PreparedBlock, service: EmailService, base_url: str, alt: str) -> Snippet:
    """The block's HTML for `service`: with the recipient token, and for Braze also with
    a per-URL signature computed by Liquid."""
    block = prepared.block
    image_path = f"/i/{block.id}.{block.format}"
    click_path = f"/c/{block.id}"
    with_token = f"r={service.r_tag}&t={service.t_tag}"
    html = service.preamble + _anchor(
        href=f"{base_url}{click_path}?{with_token}",
        src=f"{base_url}{image_path}?dpr={SNIPPET_DPR}&{with_token}",
        width=block.width,
        height=block.height,
        alt=alt,
    )
    signed = _braze_signed(base_url, image_path, click_path, block.width, block.height, alt)
    return Snippet(html=html, signed_html=signed if service.name == "braze" else None)


def _attribute(value: str) -> str:
    """`value` inside a double-quoted attribute. Single quotes stay as they are: merge
    tags use them (Klaviyo's `lookup:'name'`), and the service reads them before any
    HTML parser does."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _anchor(*, href: str, src: str, width: int, height: int, alt: str) -> str:
    # The size in attributes, so clients that block images keep the layout; display:block
    # and border:0 so no client adds a gap or a link border around the image.
    return (
        f'<a href="{_attribute(href)}" target="_blank">'
        f'<img src="{_attribute(src)}" width="{width}" height="{height}" alt="{_attribute(alt)}" '
        'style="display:block;border:0;outline:none;text-decoration:none;'
        f'width:{width}px;max-width:100%;height:auto"></a>\n'
    )


def _braze_signed(
    base_url: str, image_path: str, click_path: str, width: int, height: int, alt: str
) -> str:
    """Liquid that signs each URL as the contract's canonical string (2.3): the path, `?`,
    and the pairs sorted by name (`dpr`, `r`), then base64 made URL-safe without padding.
    `url_param_escape` writes the id as `quote` does when it holds letters, digits and
    `-_.~` (ids of other characters are signed with `POST /api/v1/sign` instead)."""

    def signature(name: str, canonical: str) -> str:
        return (
            f"{{% capture {name} %}}{canonical}{{% endcapture %}}\n"
            f"{{% assign {name} = {name} | hmac_sha256_base64: '{KEY_PLACEHOLDER}' "
            "| replace: '+', '-' | replace: '/', '_' | remove: '=' %}\n"
        )

    image_canonical = f"{image_path}?dpr={SNIPPET_DPR}&r={{{{atopen_r}}}}"
    click_canonical = f"{click_path}?r={{{{atopen_r}}}}"
    return (
        "{% assign atopen_r = {{${user_id}}} | url_param_escape %}\n"
        + signature("atopen_image_sig", image_canonical)
        + signature("atopen_click_sig", click_canonical)
        + _anchor(
            href=f"{base_url}{click_canonical}&sig={{{{atopen_click_sig}}}}",
            src=f"{base_url}{image_canonical}&sig={{{{atopen_image_sig}}}}",
            width=width,
            height=height,
            alt=alt,
        )
    )


@routes.get("/api/v1/blocks/{id}/snippet")
async def block_snippet(request: web.Request) -> web.Response:
    block_id = request.match_info["id"]
    prepared = request.app[BLOCKS].get(block_id)
    if prepared is None:
        raise not_found(f"block {block_id!r}")
    esp = request.query.get("esp", "")
    if esp not in SERVICES:
        raise invalid("esp", f"must be one of {', '.join(get_args(EspName))}")
    service = SERVICES[esp]
    alt = request.query.get("alt")
    if alt is None:
        description = prepared.block.definition.get("description")
        alt = description[:MAX_ALT_CHARS] if isinstance(description, str) else ""
    elif len(alt) > MAX_ALT_CHARS or any(unicodedata.category(c) == "Cc" for c in alt):
        raise invalid("alt", f"must be at most {MAX_ALT_CHARS} characters, no control characters")
    alt = alt or prepared.block.id
    made = snippet(prepared, service, request.app[SETTINGS].base_url, alt)
    if _first_choice(request.headers.get("Accept", "")) == "text/html":
        # The HTML alone, to paste or to pipe into a template file.
        return web.Response(text=made.html, content_type="text/html")
    return json_response(
        {
            "id": prepared.block.id,
            "esp": service.name,
            "title": service.title,
            "html": made.html,
            "signed_html": made.signed_html,
            "fields": {"recipient": service.r_field, "token": service.t_field},
        }
    )


def _first_choice(accept: str) -> str:
    return accept.split(",")[0].split(";")[0].strip().lower()
