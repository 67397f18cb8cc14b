"""Tell from the User-Agent who is fetching an image: a mail proxy, a bot, or a reader.

This module's one job is that classification. Every email-client class is one row of
`CLIENT_CLASSES`: its kind, how it is recognised, whether it is a mail provider's proxy
and what its IP address says about where the reader is. Everything else (the
`is_proxy` flag templates see, `geo`'s treatment of the address, the order of the
checks) is read from that table; `docs/architecture-clients.md` says how to add a row.

It runs on every open, so the checks are plain substring tests and results are cached:
a handful of User-Agents (the proxies, the common mail apps) make up most of the traffic.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Literal, get_args

from content_sources.source import OpenRequest, Reach, RedisCommand

# The names the table's rows may take. Written out so that mypy rejects a misspelt kind
# wherever one is compared or passed; the table must give each exactly one row, which
# is checked when this module is imported.
ClientKind = Literal[
    "apple_mpp",
    "gmail_proxy",
    "yahoo_proxy",
    "outlook_desktop",
    "browser",
    "bot",
    "unknown",
]


class AddressTells(Enum):
    """What the fetch's IP address says about where the reader is; `geo` follows it."""

    # The reader's own device fetched: a City database locates the reader.
    PLACE = "place"
    # A relay that declares the reader's country but only a coarse, often wrong, city.
    COUNTRY = "country"
    # A provider's data centre or a gateway: the address is not the reader's at all.
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class Detector:
    """How a class is recognised from the User-Agent (surrounding whitespace removed).

    A User-Agent matches when it equals one of `exact`, contains one of `tokens` once
    lowercased and once each of `not_tokens` is cut out, or starts with `pattern`.
    """

    exact: tuple[str, ...] = ()
    # Lowercase substrings: cheaper than a case-insensitive regex on every open.
    tokens: tuple[str, ...] = ()
    # Substrings that look like a token but are not one (a phone brand containing "bot").
    not_tokens: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        for token in (*self.tokens, *self.not_tokens):
            if not token or token != token.lower():
                # A token with a capital letter could never match the lowercased text.
                raise ValueError(f"detector token {token!r} must be lowercase and non-empty")
        if not (self.exact or self.tokens or self.pattern):
            raise ValueError("a detector needs an exact string, a token or a pattern")

    def matches(self, user_agent: str, lowered: str) -> bool:
        """Whether the stripped `user_agent` (and its lowercase `lowered`) is this class's."""
        if user_agent in self.exact:
            return True
        if self.tokens:
            for word in self.not_tokens:
                lowered = lowered.replace(word, "")
            if any(token in lowered for token in self.tokens):
                return True
        return self.pattern is not None and self.pattern.match(user_agent) is not None


@dataclass(frozen=True, slots=True)
class ClientClass:
    """One email-client class: one row of `CLIENT_CLASSES`."""

    kind: ClientKind
    # None only for the last row, which takes whatever no row above it claims.
    detector: Detector | None
    # Fetched by a mail provider on the reader's behalf, not by the reader's device: it
    # may be a prefetch at delivery or the only fetch before the proxy serves its copy.
    is_proxy: bool
    address_tells: AddressTells


# Checked in this order, the first match wins: Gmail's proxy claims to be Firefox and
# HeadlessChrome claims to be Chrome, so the more specific classes come before `browser`.
CLIENT_CLASSES: tuple[ClientClass, ...] = (
    ClientClass(
        "apple_mpp",
        # Apple Mail Privacy Protection sends this and nothing more.
        Detector(exact=("Mozilla/5.0",)),
        is_proxy=True,
        address_tells=AddressTells.COUNTRY,
    ),
    ClientClass(
        "gmail_proxy",
        Detector(tokens=("googleimageproxy", "via ggpht.com")),
        is_proxy=True,
        address_tells=AddressTells.NOTHING,
    ),
    ClientClass(
        "yahoo_proxy",
        Detector(tokens=("yahoomailproxy",)),
        is_proxy=True,
        address_tells=AddressTells.NOTHING,
    ),
    ClientClass(
        "bot",
        # Anything that fetches without a reader behind it: crawlers, link checkers, HTTP
        # libraries and the link-scanning gateways that open every image in incoming mail.
        Detector(
            tokens=(
                "bot",
                "crawler",
                "spider",
                "slurp",
                "facebookexternalhit",
                "curl/",
                "wget/",
                "python-requests",
                "python-httpx",
                "python-urllib",
                "aiohttp",
                "go-http-client",
                "okhttp",
                "java/",
                "apache-httpclient",
                "libwww-perl",
                "node-fetch",
                "headlesschrome",
                "phantomjs",
                "barracuda",
                "mimecast",
                "proofpoint",
            ),
            # CUBOT is an Android phone brand; without this, its readers would count as bots.
            not_tokens=("cubot",),
        ),
        is_proxy=False,
        address_tells=AddressTells.NOTHING,
    ),
    ClientClass(
        "outlook_desktop",
        # Outlook for Windows renders mail with Word and fetches images with Office's own UA:
        # `Microsoft Outlook 16.0...` or `MSOffice 16` in an IE-like header, and
        # `Microsoft Office Outlook` in Outlook 2007's and in Office's newer app header.
        Detector(
            tokens=(
                "microsoft outlook",
                "microsoft office outlook",
                "msoffice",
                "ms-office",
                "outlook-express",
            )
        ),
        is_proxy=False,
        address_tells=AddressTells.PLACE,
    ),
    ClientClass(
        "browser",
        # A platform in parentheses, then a rendering engine or browser token. Mail apps
        # that render in a web view (Apple Mail, Android and iOS apps) look like this too,
        # and so do the Outlook apps that render with the platform's web engine, not Word:
        # Outlook for Mac (`MacOutlook/`, or `Outlook/` after the platform) and Outlook
        # for iOS and Android, which fetch images with their own app header.
        Detector(
            tokens=("macoutlook/", "outlook-ios", "outlook-android"),
            pattern=re.compile(
                r"^Mozilla/5\.0 \([^)]+\).*"
                r"\b(?:AppleWebKit|Gecko|Chrome|Safari|Firefox|Edge?|Outlook)\b"
            ),
        ),
        is_proxy=False,
        address_tells=AddressTells.PLACE,
    ),
    ClientClass("unknown", None, is_proxy=False, address_tells=AddressTells.PLACE),
)


def _check(classes: Sequence[ClientClass]) -> None:
    """Fail at import, not on some open, when the table is not whole."""
    kinds = [row.kind for row in classes]
    if sorted(kinds) != sorted(get_args(ClientKind)):
        raise ValueError(f"CLIENT_CLASSES must name each ClientKind once, not {kinds}")
    if any(row.detector is None for row in classes[:-1]) or classes[-1].detector is not None:
        raise ValueError("only the last client class, the fallback, goes without a detector")


_check(CLIENT_CLASSES)
_FALLBACK = CLIENT_CLASSES[-1]
_DETECTED = tuple((row.kind, row.detector) for row in CLIENT_CLASSES if row.detector is not None)
_BY_NAME: dict[str, ClientClass] = {row.kind: row for row in CLIENT_CLASSES}


def client_class(kind: object) -> ClientClass:
    """The row for a kind as a rule context holds it; anything else is the fallback's."""
    return _BY_NAME.get(kind, _FALLBACK) if isinstance(kind, str) else _FALLBACK


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What kind of client fetched the image, as templates see it."""

    kind: ClientKind
    is_proxy: bool

    def as_dict(self) -> dict[str, object]:
        """Return the ``{"kind": ..., "is_proxy": ...}`` mapping exposed to templates."""
        return {"kind": self.kind, "is_proxy": self.is_proxy}


# One immutable instance per kind, so cached results share them.
_INFO: dict[ClientKind, ClientInfo] = {
    row.kind: ClientInfo(kind=row.kind, is_proxy=row.is_proxy) for row in CLIENT_CLASSES
}


def classify_client(user_agent: str | None) -> ClientInfo:
    """Classify the client that fetched an image from its ``User-Agent`` header."""
    return _INFO[_classify(user_agent or "")]


@lru_cache(maxsize=1024)
def _classify(user_agent: str) -> ClientKind:
    user_agent = user_agent.strip()
    if user_agent:
        lowered = user_agent.lower()
        for kind, detector in _DETECTED:
            if detector.matches(user_agent, lowered):
                return kind
    return _FALLBACK.kind


def _client_items(client: object) -> Hashable:
    return tuple(sorted(client.items())) if isinstance(client, dict) else None


class ClientSource:
    """`client`: how the image is being fetched, as `{kind, is_proxy}`."""

    name = "client"
    depends_on = frozenset[str]()
    reach = Reach.SHARED
    always_build = False
    shared_reads = False
    reads_address = False
    after_round_trip = None
    memo_part = staticmethod(_client_items)

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return classify_client(request.user_agent).as_dict()


def client_of_kind(kind: ClientKind) -> ClientInfo:
    """The client info for a kind named directly (a preview as a Gmail open, say)."""
    return _INFO[kind]
