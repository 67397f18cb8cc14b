"""The contract every email-client class passes, run over `CLIENT_CLASSES`.

Each class recognises real User-Agents taken from public sources (the comment above
each names where), and no other class takes them; its `is_proxy` reaches the rules, and
`geo` treats its address as its row says, on a real Redis and MaxMind's City test
database. The OpenAPI document and the docs' tables name only the table's kinds. A
new row fails here until it carries examples of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geoip2.database
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import LONDON_GEO, LONDON_IP, decode, put_block, signed

from content_sources import gather_context
from content_sources.client import (
    CLIENT_CLASSES,
    AddressTells,
    ClientClass,
    ClientSource,
    Detector,
    classify_client,
)
from content_sources.geo import GeoSource, remember_commands
from content_sources.profile import ProfileSource
from content_sources.source import OpenRequest
from server.api.openapi import DOCUMENT

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

EXAMPLES: dict[str, list[str]] = {
    "apple_mpp": [
        # https://github.com/ua-parser/uap-core/issues/509 (all MPP sends, since Sep 2021)
        "Mozilla/5.0",
    ],
    "gmail_proxy": [
        # https://github.com/browscap/browscap/issues/1108
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        # https://github.com/browscap/browscap/issues/121
        "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.0.7) Gecko/2009021910 "
        "Firefox/3.0.7 (via ggpht.com GoogleImageProxy)",
        # https://github.com/browscap/browscap/issues/367 (the form before GoogleImageProxy)
        "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.0.7) Gecko/2009021910 "
        "Firefox/3.0.7 (via ggpht.com)",
    ],
    "yahoo_proxy": [
        # https://github.com/faisalman/ua-parser-js/issues/494, naming Yahoo's
        # https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        # https://github.com/faisalman/ua-parser-js/issues/494 (as its log wrote it)
        "YahooMailProxy;%20https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    ],
    "outlook_desktop": [
        # https://github.com/ua-parser/uap-core/issues/132 (Outlook 2016)
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.6326; Pro)",
        # https://github.com/ua-parser/uap-core/issues/132 (Outlook 2016)
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/8.0; .NET4.0C; "
        ".NET4.0E; .NET CLR 2.0.50727; .NET CLR 3.0.30729; .NET CLR 3.5.30729; "
        "Microsoft Outlook 16.0.6366; ms-office; MSOffice 16)",
        # https://github.com/browscap/browscap/issues/1634
        "Microsoft Office/16.0 (Microsoft Outlook 16.0.8241; Pro)",
        # https://github.com/browscap/browscap/issues/2795
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
        # https://github.com/tobie/ua-parser/issues/498 (Outlook 2007)
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 5.1; Trident/4.0; GTB7.5; InfoPath.2; "
        ".NET CLR 2.0.50727; .NET CLR 3.0.4506.2152; .NET CLR 3.5.30729; MSOffice 12)",
        # https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml (Outlook 2007)
        "Microsoft Office/12.0 (Windows NT 6.1; Microsoft Office Outlook 12.0.6739; Pro)",
        # https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml (Outlook 2016)
        "Microsoft Office/16.0 (Microsoft Outlook Mail 16.0.6525; Pro)",
        # https://github.com/browscap/browscap/issues/2468 (Outlook for Microsoft 365)
        "Microsoft Office Outlook/16.0.12527.21378 (Windows/10.0; Desktop x64; en-GB; "
        "Desktop app; Hewlett-Packard/HP ProBook 650 G1)",
    ],
    "bot": [
        # https://gist.github.com/JoeyBurzynski/9953198b825b9a8675715220586fb494
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        # https://gist.github.com/olragon/25b28fed2c1e969223e8199d35cd5786
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        # https://github.com/searxng/searxng/pull/3116 (Puppeteer)
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/119.0.6045.105 Safari/537.36",
        # https://github.com/WhichBrowser/Parser-PHP/issues/156
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/80.0.3987.162 Safari/537.36",
        # https://github.com/matomo-org/device-detector/issues/5691
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
        # Braze's "SMS and RCS bot click filtering" (github.com/braze-inc/braze-docs)
        "Barracuda Sentinel (EE)",
        # Braze's "SMS and RCS bot click filtering" (github.com/braze-inc/braze-docs)
        "python-requests/2.32.3",
        # https://github.com/heron-data/client-python/issues/9
        "python-requests/2.23.0",
        # https://github.com/scalyr/scalyr-agent-2/pull/658
        "Python-urllib/2.7",
    ],
    "browser": [
        # https://github.com/ua-parser/uap-core/issues/528 (Apple Mail 13)
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_6) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        # https://github.com/biggora/express-useragent/issues/78 (Mail on an iPhone)
        "Mozilla/5.0 (iPhone; CPU iPhone OS 10_1_1 like Mac OS X) AppleWebKit/602.2.14 "
        "(KHTML, like Gecko) Mobile/14B100",
        # https://github.com/donatj/PhpUserAgent/issues/53
        "Mozilla/5.0 (Windows NT 10.0; WOW64; rv:52.0) Gecko/20100101 Thunderbird/52.9.1 "
        "Lightning/5.4.9.1",
        # https://github.com/faisalman/ua-parser-js/issues/555
        "Mozilla/5.0 (X11; Linux x86_64; rv:78.0) Gecko/20100101 Thunderbird/78.13.0",
        # https://github.com/platonai/Browser4/issues/24
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/95.0.4638.69 Safari/537.36",
        # https://github.com/omrilotan/isbot/issues/51
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_4) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/78.0.3904.97 Safari/537.36",
        # https://github.com/Igalia/wolvic/pull/1751
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        # Outlook's apps that render with the platform's web engine, not Word:
        # https://github.com/browscap/browscap/issues/1634 (Outlook for Mac)
        "Mozilla/5.0 (Macintosh; Intel Mac OS X) Outlook/0.0.0",
        # https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml (Outlook for Mac)
        "MacOutlook/15.27.0.161010 (Intelx64 Mac OS X Version 10.11.6 (Build 15G1108))",
        # https://github.com/ua-parser/uap-core/blob/master/tests/test_os.yaml (Outlook for Mac)
        "MacOutlook/16.12.0.180401 (Intelx64 Mac OS X Version 10.12.6 (build 16G29))",
        # https://github.com/3rd-Eden/useragent/issues/146 (an image in an email opened in
        # Outlook for iOS)
        "Outlook-iOS/711.2304115.prod.iphone (3.26.0)",
        # https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml (Outlook for iOS)
        "Outlook-iOS/665.29827.prod.iphone (2.63.0)",
        # https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml (Outlook's
        # web view on an iPhone; the file's entry ends with a stray `")`, left out here)
        "Mozilla/5.0 (iPhone; CPU iPhone OS 9_3_4 like Mac OS X) AppleWebKit/601.1 "
        "(KHTML, like Gecko) Outlook-iOS-Android/1.0 Mobile/13G35 Safari/601.1.46",
        # Microsoft's "Securing Outlook for iOS and Android in Exchange Online"
        # (learn.microsoft.com, the UserAgent characteristic of the two apps)
        "Outlook-Android/2.0",
        "Outlook-iOS/2.0",
    ],
    "unknown": [
        # https://github.com/ua-parser/uap-core/issues/32 (Word, not a mail client)
        "Microsoft Office Word 2013 (15.0.4693) Windows NT 6.2",
        # https://github.com/ua-parser/uap-core/issues/32 (Excel)
        "Microsoft Office/15.0 (Windows NT 6.2; Microsoft Excel 15.0.4693; Pro)",
        # https://github.com/matomo-org/device-detector/issues/5585 (an Android app)
        "Dalvik/0.0.0 (Linux; U; Android 7.1.1 Build/ABCDEF)",
    ],
}

ROWS = [pytest.param(row, id=row.kind) for row in CLIENT_CLASSES]
EXAMPLE_CASES = [
    pytest.param(kind, user_agent, id=f"{kind}-{i}")
    for kind, user_agents in EXAMPLES.items()
    for i, user_agent in enumerate(user_agents)
]
KINDS = {row.kind for row in CLIENT_CLASSES}


def test_every_class_has_examples_and_every_example_a_class() -> None:
    assert set(EXAMPLES) == KINDS
    assert all(EXAMPLES[kind] for kind in KINDS)


@pytest.mark.parametrize(("kind", "user_agent"), EXAMPLE_CASES)
def test_an_example_is_detected_as_its_class_and_no_other(kind: str, user_agent: str) -> None:
    assert classify_client(user_agent).kind == kind
    # Also as a header arrives, with the whitespace around it.
    assert classify_client(f" {user_agent}\r\n").kind == kind


@pytest.mark.parametrize("row", ROWS)
def test_a_class_is_recognised_by_its_own_detector(row: ClientClass) -> None:
    """Not by falling through: the fallback's examples are claimed by no detector."""
    for user_agent in EXAMPLES[row.kind]:
        claimed_by = [
            other.kind
            for other in CLIENT_CLASSES
            if other.detector is not None and other.detector.matches(user_agent, user_agent.lower())
        ]
        if row.detector is None:
            assert claimed_by == []
        else:
            assert row.kind in claimed_by


def test_no_user_agent_is_the_fallback_class() -> None:
    fallback = CLIENT_CLASSES[-1]
    assert fallback.detector is None
    for missing in (None, "", "   "):
        assert classify_client(missing).kind == fallback.kind


@pytest.mark.parametrize("row", ROWS)
def test_a_proxy_never_locates_the_reader(row: ClientClass) -> None:
    # A proxy fetches from the provider's network, so its address is not the reader's.
    if row.is_proxy:
        assert row.address_tells is not AddressTells.PLACE


@pytest.mark.parametrize("row", ROWS)
def test_rules_see_the_class_and_whether_it_is_a_proxy(row: ClientClass) -> None:
    for user_agent in EXAMPLES[row.kind]:
        request = OpenRequest(at=NOW, user_agent=user_agent)
        value = ClientSource().build(request, (), {})
        assert value == {"kind": row.kind, "is_proxy": row.is_proxy}


def test_a_detector_token_must_be_lowercase() -> None:
    # Tokens are matched against the lowercased User-Agent: a capital could never match.
    with pytest.raises(ValueError, match="GoogleImageProxy"):
        Detector(tokens=("GoogleImageProxy",))
    with pytest.raises(ValueError, match="needs"):
        Detector()


@pytest.fixture
async def store(redis_url: str) -> Any:
    async with aioredis.from_url(redis_url) as client:
        yield client


# What `geo` is for an open from a London address by a recipient whose profile has no
# location, by what the class's address tells.
GEO_FROM_LONDON = {
    AddressTells.PLACE: LONDON_GEO,
    AddressTells.COUNTRY: {"country": "GB", "source": "ip"},
    AddressTells.NOTHING: {"source": "none"},
}


@pytest.mark.parametrize("row", ROWS)
async def test_geo_treats_the_address_as_the_class_says(
    row: ClientClass, store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    sources = (ProfileSource(), ClientSource(), GeoSource(reader))
    for user_agent in EXAMPLES[row.kind]:
        request = OpenRequest(at=NOW, recipient="u1", user_agent=user_agent, client_ip=LONDON_IP)
        context = await gather_context(store, sources, request, frozenset({"geo"}))
        assert context["geo"] == GEO_FROM_LONDON[row.address_tells]
        # Only the reader's own device teaches where the recipient was last seen.
        remembered = remember_commands("u1", context, ttl_s=60)
        assert bool(remembered) is (row.address_tells is AddressTells.PLACE)


def _variant_for(row: ClientClass, color: str) -> dict[str, Any]:
    proxy = "client.is_proxy" if row.is_proxy else "not client.is_proxy"
    return {
        "name": row.kind,
        "when": f"client.kind == '{row.kind}' and {proxy}",
        "layers": [{"type": "fill", "color": color}],
    }


def _colors() -> dict[str, tuple[int, int, int]]:
    """A colour of its own for each class's variant."""
    return {row.kind: (20 * i + 10, 200 - 20 * i, 90) for i, row in enumerate(CLIENT_CLASSES)}


async def test_an_open_shows_each_class_its_own_variant(client: TestClient[Any, Any]) -> None:
    colors = _colors()
    await put_block(
        client,
        "by-client",
        {
            "width": 40,
            "height": 20,
            "format": "png",
            "variants": [
                _variant_for(row, "#{:02x}{:02x}{:02x}".format(*colors[row.kind]))
                for row in CLIENT_CLASSES
            ],
            "default": {
                "layers": [{"type": "fill", "color": "#000000"}],
                "link": "https://shop.example.com/",
            },
        },
    )
    for row in CLIENT_CLASSES:
        for user_agent in EXAMPLES[row.kind]:
            response = await client.get(
                signed("/i/by-client.png?r=u1"), headers={"User-Agent": user_agent}
            )
            assert response.status == 200
            assert response.headers["X-Atopen-Variant"] == row.kind, user_agent
            image = decode(await response.read()).convert("RGB")
            assert image.getpixel((20, 10)) == colors[row.kind]


def _enums_naming_client_kinds(node: object) -> Iterator[list[object]]:
    """Every `enum` in the document that lists at least one client kind."""
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and KINDS.intersection(v for v in enum if isinstance(v, str)):
            yield enum
        for child in node.values():
            yield from _enums_naming_client_kinds(child)
    elif isinstance(node, list):
        for child in node:
            yield from _enums_naming_client_kinds(child)


def test_the_openapi_document_lists_exactly_the_tables_kinds() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    schema = document["components"]["schemas"]["ClientKind"]
    assert sorted(schema["enum"]) == sorted(KINDS)
    for enum in _enums_naming_client_kinds(document):
        assert sorted(map(str, enum)) == sorted(KINDS)


def _markdown_tables(text: str) -> Iterator[list[list[str]]]:
    """Each table in a Markdown text, as rows of cells, the header first (no rule line)."""
    table: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                table.append(cells)
        elif table:
            yield table
            table = []


def _doc_tables(first_header: str) -> list[tuple[Path, list[list[str]]]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for table in _markdown_tables(path.read_text(encoding="utf-8")):
            if table[0][0] == first_header:
                found.append((path, table))
    return found


def _code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_docs_table_of_kinds_agrees_with_the_table() -> None:
    tables = [(path, t) for path, t in _doc_tables("kind") if "`is_proxy`" in t[0]]
    assert tables, "no docs table of client kinds (| kind | detected by | `is_proxy` |)"
    by_kind: dict[str, ClientClass] = {row.kind: row for row in CLIENT_CLASSES}
    for path, table in tables:
        rows = {_code_spans(cells[0])[0]: cells for cells in table[1:]}
        assert set(rows) == KINDS, path
        for kind, (_, detected_by, is_proxy) in rows.items():
            row = by_kind[kind]
            assert is_proxy == ("yes" if row.is_proxy else "no"), (path, kind)
            detector = row.detector
            if detector is None or detector.pattern is not None:
                continue
            # Every string the docs say a class is recognised by is one it really is.
            known = {*detector.tokens, *(s.lower() for s in detector.exact)}
            assert {s.lower() for s in _code_spans(detected_by)} <= known, (path, kind)


def test_the_docs_table_of_geo_agrees_with_the_table() -> None:
    tables = _doc_tables("`client.kind`")
    assert tables, "no docs table of where geo comes from (| `client.kind` | ... |)"
    by_kind: dict[str, ClientClass] = {row.kind: row for row in CLIENT_CLASSES}
    for path, table in tables:
        groups = [_code_spans(cells[0]) for cells in table[1:]]
        named = [kind for group in groups for kind in group]
        assert sorted(named) == sorted(KINDS), path
        for group in groups:
            # Kinds the docs describe together are treated alike.
            assert len({by_kind[kind].address_tells for kind in group}) == 1, (path, group)
