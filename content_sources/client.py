"""Tell from the User-Agent who is fetching an image: a mail proxy, a bot, or a reader.

This module's one job is that classification. It runs on every open, so the checks are
plain substring tests and results are cached: a handful of User-Agents (the proxies,
the common mail apps) make up most of the traffic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from content_sources.base import OpenRequest, RedisCommand

ClientKind = Literal[
    "apple_mpp",
    "gmail_proxy",
    "yahoo_proxy",
    "outlook_desktop",
    "browser",
    "bot",
    "unknown",
]

# A proxy fetch comes from the provider's network, not the reader's device, and may be
# a prefetch at delivery or the only fetch before the proxy serves its cached copy.
_PROXY_KINDS: frozenset[ClientKind] = frozenset({"apple_mpp", "gmail_proxy", "yahoo_proxy"})


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
    kind: ClientInfo(kind=kind, is_proxy=kind in _PROXY_KINDS) for kind in get_args(ClientKind)
}

# Apple Mail Privacy Protection sends this and nothing more.
_APPLE_MPP_UA = "Mozilla/5.0"

# The token checks below are lowercase substrings rather than case-insensitive regexes:
# on a typical UA they are several times faster, and this runs on every open.
_GMAIL_PROXY_TOKENS = ("googleimageproxy", "via ggpht.com")

_YAHOO_PROXY_TOKENS = ("yahoomailproxy",)

# Anything that fetches without a reader behind it: crawlers, link checkers, HTTP
# libraries and the link-scanning gateways that open every image in incoming mail.
_BOT_TOKENS = (
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
)

# Outlook for Windows renders mail with Word and fetches images with Office's own UA.
_OUTLOOK_TOKENS = ("microsoft outlook", "msoffice", "ms-office", "outlook-express")

# A platform in parentheses, then a rendering engine or browser token. Mail apps that
# render in a web view (Apple Mail, Android and iOS apps) look like this too.
_BROWSER = re.compile(
    r"^Mozilla/5\.0 \([^)]+\).*\b(?:AppleWebKit|Gecko|Chrome|Safari|Firefox|Edge?)\b"
)


def _contains_any(text: str, tokens: tuple[str, ...]) -> bool:
    return any(token in text for token in tokens)


def classify_client(user_agent: str | None) -> ClientInfo:
    """Classify the client that fetched an image from its ``User-Agent`` header."""
    return _INFO[_classify(user_agent or "")]


@lru_cache(maxsize=1024)
def _classify(user_agent: str) -> ClientKind:
    # Order matters: Gmail's proxy claims to be Firefox and HeadlessChrome claims to be
    # Chrome, so the more specific kinds are checked before the browser pattern.
    user_agent = user_agent.strip()
    if not user_agent:
        return "unknown"
    if user_agent == _APPLE_MPP_UA:
        return "apple_mpp"
    lowered = user_agent.lower()
    if _contains_any(lowered, _GMAIL_PROXY_TOKENS):
        return "gmail_proxy"
    if _contains_any(lowered, _YAHOO_PROXY_TOKENS):
        return "yahoo_proxy"
    # CUBOT is an Android phone brand; without this, its readers would count as bots.
    if _contains_any(lowered.replace("cubot", ""), _BOT_TOKENS):
        return "bot"
    if _contains_any(lowered, _OUTLOOK_TOKENS):
        return "outlook_desktop"
    if _BROWSER.match(user_agent):
        return "browser"
    return "unknown"


class ClientSource:
    """`client`: how the image is being fetched, as `{kind, is_proxy}`."""

    name = "client"

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return classify_client(request.user_agent).as_dict()


def client_of_kind(kind: ClientKind) -> ClientInfo:
    """The client info for a kind named directly (a preview as a Gmail open, say)."""
    return _INFO[kind]
