"""`GET /api/v1/blocks/{id}/snippet`: each service's snippet, merged as that service merges
its tags (by the forms its documentation gives), opens the block personalised.

Each service's merge tags are matched here by the syntax its documentation shows; a
snippet written in any other form leaves tags unmerged and fails. The sources:
- Braze: custom attributes `{{custom_attribute.${name}}}`, the external id
  `{{${user_id}}}` (braze.com/docs/user_guide/messaging/design_and_edit/personalize/
  sources/user_profile/); the filters `url_param_escape` and `hmac_sha256_base64`, with
  the examples checked below (braze.com/docs/user_guide/personalization_and_dynamic_content/
  liquid/advanced_filters).
- Salesforce Marketing Cloud: `AttributeValue("name")` (developer.salesforce.com/docs/
  marketing/marketing-cloud-ampscript/references/mc-ampscript-utilities/
  mc-ampscript-reference-utilities-attribute-value.html), `URLEncode(s, 1, 1)`
  (.../mc-ampscript-http/mc-ampscript-reference-http-url-encode.md); AMPscript has SHA256
  but no HMAC (.../references/mc-ampscript-encryption), so no per-URL form.
- Klaviyo: a custom property as `{{ person|lookup:'name' }}` (help.klaviyo.com, template
  tags; also shown in help.inveterate.com's Klaviyo template variables).
- Mailchimp: `*|TAG|*` of uppercase letters, digits and underscores
  (mailchimp.com/developer/marketing/docs/merge-fields/), `*|URL:TAG|*` URL-encoded.
- Iterable: a profile field as `{{name}}`, `{{#urlEncode}}...{{/urlEncode}}`, and only
  `hmacSHA1` among its HMACs (support.iterable.com/hc/en-us/articles/205480365).
- HubSpot: the `contact` dictionary, `{{ contact.name }}`, with HubL's `urlencode` filter
  (developers.hubspot.com/docs/cms/reference/hubl/variables).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from sample_blocks import one_variant_block
from support import AUTH, SECRET, decode, put_block, refused_fields

from server.api.snippets_routes import KEY_PLACEHOLDER, SERVICES

Client = TestClient[Any, Any]
BLOCK = "hero"
# An id of the letters, digits and `-_.~` that services' ids are made of, and one that
# only arrives whole if the service URL-encodes it (a `+` unencoded reads as a space).
PLAIN_ID = "sub-1001"
ODD_ID = "Ann Lee+2"
# Klaviyo's tags have no URL-encoding filter: its ids must be URL-safe (docs say so).
URL_SAFE_IDS_ONLY = {"klaviyo"}


def hero() -> dict[str, Any]:
    return {
        "description": "A greeting for known readers",
        **one_variant_block(
            "named", "true", "{{ profile.first_name }}", "https://shop.example.com/you"
        ),
    }


# Each service's merge, as its documentation writes the tags: pattern -> the value of
# the field the pattern names. `fields` holds the recipient's custom fields.
Merge = Callable[[str, dict[str, str]], str]


def url_param_escape(value: str) -> str:
    """Braze's `url_param_escape`: everything but unreserved characters escaped, `&` too."""
    return quote(value, safe="-_.~")


def merge_braze(text: str, fields: dict[str, str]) -> str:
    text = re.sub(
        r"\{\{\$\{user_id\} \| url_param_escape\}\}",
        lambda _: url_param_escape(fields["user_id"]),
        text,
    )
    return re.sub(r"\{\{custom_attribute\.\$\{(\w+)\}\}\}", lambda m: fields[m[1]], text)


def merge_sfmc(text: str, fields: dict[str, str]) -> str:
    variables: dict[str, str] = {}
    block = re.search(r"%%\[(.*?)\]%%\n?", text, re.DOTALL)
    assert block is not None
    for statement in block[1].strip().splitlines():
        encoded = re.fullmatch(
            r'SET @(\w+) = URLEncode\(AttributeValue\("(\w+)"\), 1, 1\)', statement
        )
        plain = re.fullmatch(r'SET @(\w+) = AttributeValue\("(\w+)"\)', statement)
        if encoded:
            variables[encoded[1]] = quote(fields[encoded[2]], safe="")
        elif plain:
            variables[plain[1]] = fields[plain[2]]
        else:
            raise AssertionError(f"not an AMPscript statement of the documented forms: {statement}")
    text = text.replace(block[0], "")
    return re.sub(r"%%=v\(@(\w+)\)=%%", lambda m: variables[m[1]], text)


def merge_klaviyo(text: str, fields: dict[str, str]) -> str:
    return re.sub(r"\{\{ person\|lookup:'(\w+)' \}\}", lambda m: fields[m[1]], text)


def merge_mailchimp(text: str, fields: dict[str, str]) -> str:
    text = re.sub(r"\*\|URL:([A-Z0-9_]+)\|\*", lambda m: quote(fields[m[1]], safe=""), text)
    return re.sub(r"\*\|([A-Z0-9_]+)\|\*", lambda m: fields[m[1]], text)


def merge_iterable(text: str, fields: dict[str, str]) -> str:
    text = re.sub(
        r"\{\{#urlEncode\}\}\{\{(\w+)\}\}\{\{/urlEncode\}\}",
        lambda m: quote(fields[m[1]], safe=""),
        text,
    )
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m[1]], text)


def merge_hubspot(text: str, fields: dict[str, str]) -> str:
    return re.sub(
        r"\{\{ contact\.(\w+)(\|urlencode)? \}\}",
        lambda m: quote(fields[m[1]], safe="") if m[2] else fields[m[1]],
        text,
    )


def merge_generic(text: str, fields: dict[str, str]) -> str:
    # As its field description asks: the recipient id URL-encoded, the token as it is.
    return re.sub(
        r"\{\{(\w+)\}\}",
        lambda m: quote(fields[m[1]], safe="") if m[1] == "recipient_id" else fields[m[1]],
        text,
    )


MERGES: dict[str, tuple[Merge, str, str]] = {
    # service -> (merge, the recipient id's field, the token's field)
    "braze": (merge_braze, "user_id", "atopen_token"),
    "sfmc": (merge_sfmc, "_subscriberkey", "atopen_token"),
    "klaviyo": (merge_klaviyo, "atopen_id", "atopen_token"),
    "mailchimp": (merge_mailchimp, "ATOPEN_ID", "ATOPEN_TOK"),
    "iterable": (merge_iterable, "userId", "atopen_token"),
    "hubspot": (merge_hubspot, "atopen_id", "atopen_token"),
    "generic": (merge_generic, "recipient_id", "atopen_token"),
}


class Anchor(HTMLParser):
    """The link and image of a snippet, attributes decoded as an email client would."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: dict[str, dict[str, str | None]] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = dict(attrs)


async def snippet_of(client: Client, esp: str, **query: str) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/blocks/{BLOCK}/snippet", params={"esp": esp, **query}, headers=AUTH
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def token_of(client: Client, recipient: str) -> str:
    response = await client.post("/api/v1/tokens", json={"recipients": [recipient]}, headers=AUTH)
    assert response.status == 200, await response.text()
    token: str = (await response.json())["tokens"][recipient]
    return token


async def open_merged(client: Client, merged: str) -> tuple[str, str]:
    """The variant the merged snippet's image shows, and where its link goes."""
    assert not re.search(r"\{\{|\{%|%%|\*\|", merged), f"tags left unmerged: {merged}"
    anchor = Anchor(merged)
    image_url = urlsplit(str(anchor.tags["img"]["src"]))
    click_url = urlsplit(str(anchor.tags["a"]["href"]))
    image = await client.get(f"{image_url.path}?{image_url.query}")
    assert image.status == 200
    assert decode(await image.read()).size == (600, 200)  # dpr=2
    click = await client.get(f"{click_url.path}?{click_url.query}", allow_redirects=False)
    return image.headers["X-Atopen-Variant"], click.headers["Location"]


@pytest.fixture
async def client_with_block(client: Client) -> Client:
    await put_block(client, BLOCK, hero())
    for recipient in (PLAIN_ID, ODD_ID):
        answer = await client.put(
            f"/api/v1/profiles/{quote(recipient, safe='')}",
            json={"first_name": "Ann"},
            headers=AUTH,
        )
        assert answer.status in (200, 201), await answer.text()
    return client


@pytest.mark.parametrize(
    ("esp", "recipient"),
    [
        (esp, recipient)
        for esp in sorted(MERGES)
        for recipient in (PLAIN_ID, ODD_ID)
        if recipient == PLAIN_ID or esp not in URL_SAFE_IDS_ONLY
    ],
)
async def test_each_service_merges_its_snippet_into_a_personal_image_and_link(
    client_with_block: Client, esp: str, recipient: str
) -> None:
    client = client_with_block
    snippet = await snippet_of(client, esp)
    assert snippet["esp"] == esp
    merge, id_field, token_field = MERGES[esp]
    anchor = Anchor(snippet["html"])
    assert anchor.tags["img"]["width"] == "300"
    assert anchor.tags["img"]["height"] == "100"
    assert anchor.tags["img"]["alt"] == "A greeting for known readers"
    assert "dpr=2&" in str(anchor.tags["img"]["src"])

    token = await token_of(client, recipient)
    merged = merge(snippet["html"], {id_field: recipient, token_field: token})
    variant, link = await open_merged(client, merged)
    assert (variant, link) == ("named", "https://shop.example.com/you")

    # Someone else's token on this id is an unsigned open: the default, not the person's.
    merged = merge(snippet["html"], {id_field: recipient, token_field: await token_of(client, "x")})
    variant, link = await open_merged(client, merged)
    assert (variant, link) == ("default", "https://shop.example.com/")


def test_braze_filters_as_documented() -> None:
    # The examples of Braze's advanced filters page.
    assert url_param_escape("hey<&>hi") == "hey%3C%26%3Ehi"
    assert (
        liquid_hmac_sha256_base64("hey", "secret_key")
        == "jfiX+No9eZL+V8jbxvJ1eM+/LcxND7tAALjJJIQdUI4="
    )


def liquid_hmac_sha256_base64(value: str, key: str) -> str:
    return base64.b64encode(hmac.digest(key.encode(), value.encode(), hashlib.sha256)).decode()


def run_braze_liquid(template: str, user_id: str, key: str) -> str:
    """The Liquid statements of the signed Braze snippet, run as Braze runs them (only the
    forms it uses: `assign` of the user id, `capture`, and `assign` with the filters)."""
    variables: dict[str, str] = {}

    def expand(text: str) -> str:
        return re.sub(r"\{\{(\w+)\}\}", lambda m: variables[m[1]], text)

    def assign_user(match: re.Match[str]) -> str:
        variables[match[1]] = url_param_escape(user_id)
        return ""

    def capture(match: re.Match[str]) -> str:
        variables[match[1]] = expand(match[2])
        return ""

    def sign(match: re.Match[str]) -> str:
        assert match[1] == match[2]
        assert match[3] == KEY_PLACEHOLDER
        signature = liquid_hmac_sha256_base64(variables[match[2]], key)
        variables[match[1]] = signature.replace("+", "-").replace("/", "_").replace("=", "")
        return ""

    text = re.sub(
        r"\{% assign (\w+) = \{\{\$\{user_id\}\}\} \| url_param_escape %\}\n", assign_user, template
    )
    text = re.sub(r"\{% capture (\w+) %\}(.*?)\{% endcapture %\}\n", capture, text)
    text = re.sub(
        r"\{% assign (\w+) = (\w+) \| hmac_sha256_base64: '([^']+)' "
        r"\| replace: '\+', '-' \| replace: '/', '_' \| remove: '=' %\}\n",
        sign,
        text,
    )
    return expand(text)


async def test_braze_signs_each_url_itself(client_with_block: Client) -> None:
    snippet = await snippet_of(client_with_block, "braze")
    merged = run_braze_liquid(snippet["signed_html"], PLAIN_ID, SECRET)
    variant, link = await open_merged(client_with_block, merged)
    assert (variant, link) == ("named", "https://shop.example.com/you")
    # Signed with a key the service does not share: an unsigned open.
    merged = run_braze_liquid(snippet["signed_html"], PLAIN_ID, "another-key")
    assert await open_merged(client_with_block, merged) == ("default", "https://shop.example.com/")


async def test_only_braze_has_a_per_url_form(client_with_block: Client) -> None:
    for esp in SERVICES:
        snippet = await snippet_of(client_with_block, esp)
        assert (snippet["signed_html"] is not None) == (esp == "braze")
        assert set(snippet["fields"]) == {"recipient", "token"}


async def test_alt_text_is_given_or_the_description_and_escaped(client_with_block: Client) -> None:
    snippet = await snippet_of(client_with_block, "generic", alt='Spring "sale" <now>')
    assert 'alt="Spring &quot;sale&quot; &lt;now&gt;"' in snippet["html"]
    assert Anchor(snippet["html"]).tags["img"]["alt"] == 'Spring "sale" <now>'


async def test_bad_requests_name_the_field(client_with_block: Client) -> None:
    client = client_with_block
    for query, field in (
        ({"esp": "sendgrid"}, "esp"),
        ({}, "esp"),
        ({"esp": "braze", "alt": "x" * 301}, "alt"),
        ({"esp": "braze", "alt": "line\nbreak"}, "alt"),
    ):
        response = await client.get(f"/api/v1/blocks/{BLOCK}/snippet", params=query, headers=AUTH)
        assert await refused_fields(response) == [field]
    response = await client.get("/api/v1/blocks/nope/snippet?esp=braze", headers=AUTH)
    assert response.status == 404
    response = await client.get(f"/api/v1/blocks/{BLOCK}/snippet?esp=braze")
    assert response.status == 401


async def test_the_html_alone_when_asked_for_html(client_with_block: Client) -> None:
    response = await client_with_block.get(
        f"/api/v1/blocks/{BLOCK}/snippet?esp=hubspot", headers={**AUTH, "Accept": "text/html"}
    )
    assert response.status == 200
    assert response.content_type == "text/html"
    assert await response.text() == (await snippet_of(client_with_block, "hubspot"))["html"]
