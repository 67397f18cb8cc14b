"""Who fetched an image or followed a link: a person, a prefetch, or a scanner.

Every record gets one fetch class (contract section 5), decided here and nowhere else:

    human     the reader's own client, or a Gmail or Yahoo proxy fetch (those proxies
              fetch when a person opens the message)
    prefetch  Apple Mail Privacy Protection, which fetches every image at delivery
              whether or not anyone reads the message
    scanner   security gateways, link checkers and other machines

The rules, each with its evidence (the design notes' EMAIL_CLIENTS.md quotes them):

O1. An image fetch whose User-Agent is exactly `Mozilla/5.0` is Apple's MPP proxy: a
    prefetch. MPP sends that string and nothing more since 20 Sep 2021
    (https://github.com/ua-parser/uap-core/issues/509); it loads "all remote content
    privately in the background" when Mail downloads new messages
    (https://help.socketlabs.com/docs/identifying-apple-mpp-opens-in-notification-api-events).
O2. A User-Agent that names a crawler, an HTTP library, a headless browser or a mail
    security product (`client.kind == "bot"`) is a scanner. Proofpoint, Mimecast and
    Barracuda "collect all the emails, parse them, and follow all the links including
    the tracking pixels" (https://github.com/mautic/mautic/issues/9798).
O3. No User-Agent at all is a scanner: every mail client and every proxy above sends one.
O4. Anything else is a person: the Gmail and Yahoo proxies fetch when the message is
    opened (Bird's analysis of 9.8 billion Gmail opens, https://messagebird.com/en/blog/gmail-prefetching-images),
    and a mail app or web mail fetches with its own User-Agent.

Clicks follow O2 and O3, and three more rules:

C1. A click whose User-Agent is the bare `Mozilla/5.0` is a machine: a person's click
    opens a browser, which always names itself in full; only proxies send the bare one.
C2. A click within `AFTER_FETCH_S` seconds of the block's image being fetched for the same
    recipient is a scanner: gateways fetch the images and follow every link within
    seconds of delivery, and a person needs longer than that to see the image and move
    to the link. (An open-source phishing-simulation tracker takes clicks within 1.5 s
    of the send for gateway prefetches: https://github.com/jusso-dev/Collie/pull/50.)
C3. A click within `BURST_S` seconds of the same recipient's previous click is a scanner:
    gateways follow every link of a message in one burst, while a person's click takes
    them to a page, and the next click needs them to come back to the message first.
    The first click of a burst is caught by C2 when the gateway fetched the images too.
C4. A HEAD request is a machine checking a link (a browser follows links with GET; the
    tracker cited in C2 treats HEAD as a gateway's too).

What is not used: the address's network (data centre or home). The GeoIP database the
service reads has no such field; a deployment that needs it can classify the export.
"""

from __future__ import annotations

from typing import Literal

from content_sources.client import ClientKind

FetchClass = Literal["human", "prefetch", "scanner"]

AFTER_FETCH_S = 2.0
BURST_S = 2.0
_APPLE_MPP_UA = "Mozilla/5.0"


def classify_open(kind: ClientKind, user_agent: str | None) -> FetchClass:
    """The fetch class of an image fetch, from its client kind and User-Agent."""
    if kind == "apple_mpp":  # O1
        return "prefetch"
    if kind == "bot" or not (user_agent or "").strip():  # O2, O3
        return "scanner"
    return "human"  # O4


def classify_click(
    kind: ClientKind,
    user_agent: str | None,
    *,
    after_fetch_s: float | None,
    after_previous_click_s: float | None,
    head: bool = False,
) -> FetchClass:
    """The fetch class of a click. `after_fetch_s`: seconds since the block's image was
    last fetched for this recipient (None when none is remembered);
    `after_previous_click_s`: since the recipient's previous click (None when none)."""
    if head or kind == "bot" or not (user_agent or "").strip():  # C4, O2, O3
        return "scanner"
    if user_agent is not None and user_agent.strip() == _APPLE_MPP_UA:  # C1
        return "scanner"
    if after_fetch_s is not None and 0 <= after_fetch_s < AFTER_FETCH_S:  # C2
        return "scanner"
    if after_previous_click_s is not None and 0 <= after_previous_click_s < BURST_S:  # C3
        return "scanner"
    return "human"
