"""The fetch class of opens and clicks (server/records/classify.py), on real User-Agents
and on timings reported in public sources (each named beside its case)."""

from __future__ import annotations

import pytest

from content_sources.client import classify_client
from server.records.classify import AFTER_FETCH_S, BURST_S, classify_click, classify_open

# Apple Mail Privacy Protection: exactly this, since 20 Sep 2021
# (https://github.com/ua-parser/uap-core/issues/509).
APPLE_MPP = "Mozilla/5.0"
# Gmail's image proxy (https://github.com/browscap/browscap/issues/1108).
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
# Yahoo's (https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html names itself in it).
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
# Apple Mail on an iPhone without MPP (https://github.com/biggora/express-useragent/issues/78).
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 10_1_1 like Mac OS X) AppleWebKit/602.2.14 "
    "(KHTML, like Gecko) Mobile/14B100"
)
# Apple Mail on a Mac (https://github.com/ua-parser/uap-core/issues/528).
MAC_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
# Outlook for Windows (the form tests/content_sources/test_client_kind.py carries).
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.5095; Pro)"
# A desktop browser following a link: Safari on macOS, from a gophish issue's access log
# of a person's click (https://github.com/gophish/gophish/issues/499).
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_12_2) AppleWebKit/602.3.12 (KHTML, like Gecko) "
    "Version/10.0.2 Safari/602.3.12"
)
# Machines: Google's crawler, an HTTP library, a headless browser.
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.4.0"
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.109 Safari/537.36"
)


def open_class(user_agent: str | None) -> str:
    return classify_open(classify_client(user_agent).kind, user_agent)


def click_class(
    user_agent: str | None,
    after_fetch_s: float | None = None,
    after_previous_click_s: float | None = None,
    head: bool = False,
) -> str:
    return classify_click(
        classify_client(user_agent).kind,
        user_agent,
        after_fetch_s=after_fetch_s,
        after_previous_click_s=after_previous_click_s,
        head=head,
    )


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (APPLE_MPP, "prefetch"),
        (GMAIL_PROXY, "human"),  # the proxy fetches when a person opens
        (YAHOO_PROXY, "human"),
        (IPHONE_MAIL, "human"),
        (MAC_MAIL, "human"),
        (OUTLOOK, "human"),
        (GOOGLEBOT, "scanner"),
        (CURL, "scanner"),
        (HEADLESS, "scanner"),
        ("", "scanner"),
        (None, "scanner"),
    ],
)
def test_opens_are_classified_by_who_fetched_them(user_agent: str | None, expected: str) -> None:
    assert open_class(user_agent) == expected


def test_a_person_clicking_a_while_after_the_image_loaded_is_human() -> None:
    assert click_class(SAFARI, after_fetch_s=40.0) == "human"
    assert click_class(IPHONE_MAIL, after_fetch_s=None, after_previous_click_s=None) == "human"


def test_a_click_right_after_the_image_was_fetched_is_a_gateway() -> None:
    # A gateway opens "the mail ... as soon as it is sent ... and ALL the links have been
    # clicked" (https://github.com/anymail/django-anymail/issues/200); a phishing-test
    # tracker takes clicks within 1.5 s of the send as gateway prefetches
    # (https://github.com/jusso-dev/Collie/pull/50).
    assert click_class(SAFARI, after_fetch_s=1.5) == "scanner"
    assert click_class(SAFARI, after_fetch_s=0.2) == "scanner"
    assert click_class(SAFARI, after_fetch_s=AFTER_FETCH_S) == "human"


def test_clicks_in_a_burst_are_a_gateway_following_every_link() -> None:
    # "it immediately shows that the mail has been opened and ALL the links have been
    # clicked" (https://github.com/anymail/django-anymail/issues/200).
    assert click_class(SAFARI, after_previous_click_s=0.3) == "scanner"
    assert click_class(SAFARI, after_previous_click_s=BURST_S + 10) == "human"


def test_machines_clicking_are_scanners_whenever_they_click() -> None:
    for machine in (CURL, GOOGLEBOT, HEADLESS, "", None):
        assert click_class(machine, after_fetch_s=3600.0) == "scanner"
    # A person's click opens a browser, which names itself in full; the bare token is a proxy.
    assert click_class(APPLE_MPP, after_fetch_s=3600.0) == "scanner"
    # Link checkers ask with HEAD (https://github.com/jusso-dev/Collie/pull/50).
    assert click_class(SAFARI, after_fetch_s=3600.0, head=True) == "scanner"


def test_a_scanner_that_waits_and_sends_a_browser_user_agent_passes_as_human() -> None:
    # The limit of these rules, written down: a scanner clicking 12 s after the person,
    # from another network with a desktop Chrome UA
    # (https://github.com/resend/resend-node/issues/901) is counted as a person.
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/146.0.0.0 Safari/537.36"
    )
    assert click_class(chrome, after_fetch_s=60.0, after_previous_click_s=12.0) == "human"
