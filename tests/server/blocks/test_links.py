"""Click targets are read the way browsers read them.

Expected hosts follow the WHATWG URL Standard (https://url.spec.whatwg.org/), the
parser browsers use for `Location` and for links; each case cites the rule it shows.
"""

from __future__ import annotations

from typing import Any

import pytest
from ada_url import URL
from aiohttp.test_utils import TestClient
from sample_blocks import greeting
from support import AUTH, put_block, signed

from renderers.resources import LocalResources, builtin_fonts
from server.blocks.compiling import Block, compile_block
from server.blocks.selection import safe_link

# Where clicks arrive: a `Location` that is not absolute is resolved against it.
CLICK_URL = "https://img.atopen.example/c/hero"
DEFAULT_LINK = "https://shop.example.com/"

# (link, the host a browser visits when sent there, or None when it goes nowhere,
#  the `Location` atopen sends, or None when the click goes to the default's link).
CASES: list[tuple[str, str | None, str | None]] = [
    ("https://shop.example.com/sale", "shop.example.com", "https://shop.example.com/sale"),
    # §4.4, special authority ignore slashes and authority states: in an http(s) URL
    # `\` is read as `/`, so the `@` after it is in the path, not the authority.
    ("https://evil.example\\@shop.example.com/", "evil.example", None),
    ("https:\\\\evil.example/", "evil.example", None),
    ("/\\evil.example/", "evil.example", None),
    # The host is right, but the text does not show what the browser reads.
    ("https://shop.example.com\\.evil.example/", "shop.example.com", None),
    # §4.4, authority state: everything before the last `@` is user info.
    ("https://shop.example.com@evil.example/", "evil.example", None),
    ("https://shop.example.com:443@evil.example/", "evil.example", None),
    ("https://evil.example@shop.example.com/", "shop.example.com", None),
    ("https://:secret@shop.example.com/", "shop.example.com", None),
    ("https://evil.example%5C@shop.example.com/", "shop.example.com", None),
    # §4.4, basic URL parser: every ASCII tab or newline is removed before parsing.
    ("https://shop.exam\tple.com/", "shop.example.com", None),
    ("https://shop.example.com/a\r\nSet-Cookie: x=1", "shop.example.com", None),
    # §3.5, host parsing: U+0000 is a forbidden host code point.
    ("https://shop.example.com\x00.evil.example/", None, None),
    # §4.4, scheme state: not http(s); `javascript:` has no host at all.
    ("javascript:alert(1)//shop.example.com", None, None),
    ("data:text/html,<script>alert(1)</script>", None, None),
    ("ftp://shop.example.com/", "shop.example.com", None),
    # §4.4, no scheme state: scheme-relative, so it takes the scheme of atopen's URL.
    ("//evil.example/", "evil.example", None),
    ("//shop.example.com/", "shop.example.com", None),
    # §3.5, host parsing: the host is percent-decoded before it is checked.
    ("https://sh%6Fp.example.com/", "shop.example.com", "https://shop.example.com/"),
    ("https://shop%2Eexample%2Ecom/x", "shop.example.com", "https://shop.example.com/x"),
    ("https://shop.example.com%2eevil.example/", "shop.example.com.evil.example", None),
    ("https://shop.example.com%40evil.example/", None, None),
    # §3.3, domain to ASCII (UTS #46): IDNA hosts, case and full-width forms.
    ("https://sh\u043ep.example.com/", "xn--shp-ted.example.com", None),
    ("https://xn--shp-tna.example.com/", "xn--shp-tna.example.com", None),
    ("https://SHOP.Example.COM/Sale", "shop.example.com", "https://shop.example.com/Sale"),
    ("https://\uff53\uff48\uff4f\uff50.example.com/", "shop.example.com", DEFAULT_LINK),
    ("https://shop\u3002example\u3002com/", "shop.example.com", DEFAULT_LINK),
    # §3.5: a trailing dot stays in the host; it names the same DNS host.
    ("https://shop.example.com./", "shop.example.com.", "https://shop.example.com./"),
    # §4.4, port state: the scheme's default port is dropped, others are kept; a port
    # above 65535 is a failure.
    ("https://shop.example.com:443/", "shop.example.com", DEFAULT_LINK),
    ("https://shop.example.com:8443/", "shop.example.com", "https://shop.example.com:8443/"),
    ("https://shop.example.com:99999/", None, None),
    # §3.5, IPv4 parser: hexadecimal and shortened addresses.
    ("http://0x7f.1/", "127.0.0.1", None),
    # §4.4, path, query and fragment states: what is not printable ASCII is
    # percent-encoded, so the `Location` header carries nothing raw.
    (
        "https://shop.example.com/\u00e4 b?q=\u00fc#\u00f6",
        "shop.example.com",
        "https://shop.example.com/%C3%A4%20b?q=%C3%BC#%C3%B6",
    ),
    # §4.4, fragment state: an `@` after `#` is part of the fragment, not user info.
    (
        "https://shop.example.com#@evil.example",
        "shop.example.com",
        "https://shop.example.com/#@evil.example",
    ),
]


def browser_host(link: str) -> str | None:
    """The host a browser goes to when `Location` is `link` on a click's response."""
    try:
        url = URL(link, CLICK_URL)
    except ValueError:
        return None
    return url.hostname or None


@pytest.fixture(scope="module")
def shop_block() -> Block:
    """A block whose only host is shop.example.com."""
    layers = [{"type": "fill", "color": "#ffffff"}]
    definition = {
        "width": 10,
        "height": 10,
        "variants": [{"name": "next", "layers": layers, "link": "{{ profile.next }}"}],
        "default": {"layers": layers, "link": DEFAULT_LINK},
    }
    block = compile_block("b", definition, 1, LocalResources([], builtin_fonts()))
    assert block.hosts == {"shop.example.com"}
    return block


@pytest.mark.parametrize(("link", "host", "location"), CASES)
def test_clicks_go_only_where_a_browser_would_reach_an_allowed_host(
    shop_block: Block, link: str, host: str | None, location: str | None
) -> None:
    assert browser_host(link) == host
    assert safe_link(shop_block, link) == location


def test_a_host_listed_in_unicode_matches_its_links() -> None:
    layers = [{"type": "fill", "color": "#ffffff"}]
    definition = {
        "width": 10,
        "height": 10,
        "link_hosts": ["sh\u00f6p.example.com"],
        "variants": [{"name": "next", "layers": layers, "link": "{{ profile.next }}"}],
        "default": {"layers": layers, "link": DEFAULT_LINK},
    }
    block = compile_block("b", definition, 1, LocalResources([], builtin_fonts()))
    expected = "https://xn--shp-tna.example.com/a"
    assert safe_link(block, "https://sh\u00f6p.example.com/a") == expected
    assert safe_link(block, "https://SH\u00d6P.example.com/a") == expected
    assert safe_link(block, expected) == expected


async def click(client: TestClient[Any, Any], recipient: str) -> str:
    response = await client.get(signed(f"/c/hero?r={recipient}"), allow_redirects=False)
    assert response.status == 302
    return response.headers["Location"]


async def link_from_profile(client: TestClient[Any, Any], link: str) -> None:
    """Block `hero` links to the recipient's `next`, and u1's `next` is `link`."""
    block = greeting()
    block["variants"][0]["link"] = "{{ profile.next }}"
    await put_block(client, "hero", block)
    profile = {"first_name": "Ann", "next": link}
    assert (await client.put("/api/v1/profiles/u1", json=profile, headers=AUTH)).status < 300


@pytest.mark.parametrize(
    "hostile",
    [
        "https://evil.example\\@shop.example.com/",
        "https://shop.example.com/a\r\nSet-Cookie: x=1",
    ],
)
async def test_a_hostile_link_from_a_profile_sends_the_click_to_the_default(
    client: TestClient[Any, Any], hostile: str
) -> None:
    await link_from_profile(client, hostile)

    # Before any open (the variant is decided for the click), then after one (the click
    # follows what the image showed).
    assert await click(client, "u1") == DEFAULT_LINK
    opened = await client.get(signed("/i/hero.png?r=u1"))
    assert opened.status == 200
    assert opened.headers["X-Atopen-Variant"] == "named"
    assert await click(client, "u1") == DEFAULT_LINK
    response = await client.get(signed("/c/hero?r=u1"), allow_redirects=False)
    assert "x" not in response.cookies


async def test_a_computed_link_is_sent_as_the_browser_would_write_it(
    client: TestClient[Any, Any],
) -> None:
    await link_from_profile(client, "https://SHOP.example.com:443/B\u00fccher?q=a b")
    assert await click(client, "u1") == "https://shop.example.com/B%C3%BCcher?q=a%20b"


@pytest.mark.parametrize(
    "literal",
    [
        "https://evil.example\\@shop.example.com/",
        "https://ann@shop.example.com/",
        "https://shop.example.com/a\tb",
    ],
)
async def test_a_literal_link_a_browser_reads_differently_is_refused_at_put(
    client: TestClient[Any, Any], literal: str
) -> None:
    block = greeting()
    block["variants"][0]["link"] = literal
    response = await client.put("/api/v1/blocks/hero", json=block, headers=AUTH)
    assert response.status == 422
    details = (await response.json())["error"]["details"]
    assert [d["field"] for d in details] == ["variants[0].link"]
    assert (await client.get("/api/v1/blocks/hero", headers=AUTH)).status == 404
