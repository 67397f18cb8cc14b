"""Tests for User-Agent classification in content_sources.client."""

from __future__ import annotations

import pytest

from content_sources.client import ClientInfo, ClientKind, classify_client

UA_TABLE: list[tuple[ClientKind, str]] = [
    # Apple Mail Privacy Protection: the bare token only.
    ("apple_mpp", "Mozilla/5.0"),
    ("apple_mpp", " Mozilla/5.0 "),
    ("apple_mpp", "Mozilla/5.0\r\n"),
    # Gmail image proxy: the current UA, the original 2013 one, and a case variant.
    (
        "gmail_proxy",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    ),
    ("gmail_proxy", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com)"),
    ("gmail_proxy", "Mozilla/5.0 (compatible; googleimageproxy)"),
    # Yahoo Mail proxy: the published UA, then variants of the token in other places.
    ("yahoo_proxy", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"),
    ("yahoo_proxy", "yahoomailproxy"),
    (
        "yahoo_proxy",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    ),
    # Outlook desktop for Windows.
    ("outlook_desktop", "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"),
    (
        "outlook_desktop",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.5095; Pro)",
    ),
    (
        "outlook_desktop",
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; "
        ".NET4.0E; .NET CLR 2.0.50727; Microsoft Outlook 16.0.4266; ms-office; MSOffice 16)",
    ),
    (
        "outlook_desktop",
        "Outlook-Express/7.0 (MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; "
        ".NET4.0E; TmstmpExt)",
    ),
    # Office's newer app header and Outlook 2007's
    # (https://github.com/browscap/browscap/issues/2468,
    # https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml).
    (
        "outlook_desktop",
        "Microsoft Office Outlook/16.0.12527.21378 (Windows/10.0; Desktop x64; en-GB; "
        "Desktop app; Hewlett-Packard/HP ProBook 650 G1)",
    ),
    (
        "outlook_desktop",
        "Microsoft Office/12.0 (Windows NT 6.1; Microsoft Office Outlook 12.0.6739; Pro)",
    ),
    # Crawlers, HTTP libraries and headless browsers.
    ("bot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    ("bot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
    ("bot", "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"),
    ("bot", "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)"),
    ("bot", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
    ("bot", "curl/8.4.0"),
    ("bot", "Wget/1.21.4"),
    ("bot", "python-requests/2.31.0"),
    ("bot", "python-httpx/0.27.0"),
    ("bot", "Python/3.11 aiohttp/3.9.5"),
    ("bot", "Go-http-client/1.1"),
    (
        "bot",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.6099.109 Safari/537.36",
    ),
    # Mail security gateways: illustrative strings carrying the vendor token.
    ("bot", "Mozilla/5.0 (compatible; Barracuda Sentinel)"),
    ("bot", "Mimecast URL Protect"),
    ("bot", "Mozilla/5.0 (compatible; Proofpoint URL Defense)"),
    # Browsers and mail apps rendering in a web view.
    (
        "browser",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148",
    ),
    (
        "browser",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    ),
    (
        "browser",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
    ),
    (
        "browser",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    ),
    ("browser", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    (
        "browser",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0",
    ),
    (
        "browser",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    ),
    (
        "browser",
        "Mozilla/5.0 (Linux; Android 10; K; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36",
    ),
    # The Outlook apps that render with the platform's web engine, not Word: Outlook for Mac
    # (https://github.com/ua-parser/uap-core/blob/master/tests/test_ua.yaml,
    # https://github.com/browscap/browscap/issues/1634) and Outlook for iOS fetching an
    # email's image (https://github.com/3rd-Eden/useragent/issues/146).
    ("browser", "MacOutlook/15.27.0.161010 (Intelx64 Mac OS X Version 10.11.6 (Build 15G1108))"),
    ("browser", "Mozilla/5.0 (Macintosh; Intel Mac OS X) Outlook/0.0.0"),
    ("browser", "Outlook-iOS/711.2304115.prod.iphone (3.26.0)"),
    # The two apps' own header, in Microsoft's "Securing Outlook for iOS and Android in
    # Exchange Online", and as a header arrives in another case.
    ("browser", "Outlook-Android/2.0"),
    ("browser", "outlook-android/2.0"),
    # "bot" inside a phone model name must not make a reader a bot.
    (
        "browser",
        "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/96.0.4664.45 Mobile Safari/537.36",
    ),
    # Nothing recognisable.
    ("unknown", ""),
    ("unknown", "   "),
    ("unknown", "Mozilla/4.0"),
    ("unknown", "mozilla/5.0"),
    ("unknown", "Mozilla/5.0 (compatible)"),
    ("unknown", "SomeMailer/1.0"),
]


@pytest.mark.parametrize(("kind", "user_agent"), UA_TABLE)
def test_classify_client(kind: ClientKind, user_agent: str) -> None:
    assert classify_client(user_agent).kind == kind


def test_missing_user_agent_is_unknown() -> None:
    assert classify_client(None) == ClientInfo(kind="unknown", is_proxy=False)


@pytest.mark.parametrize(
    ("kind", "is_proxy"),
    [
        ("apple_mpp", True),
        ("gmail_proxy", True),
        ("yahoo_proxy", True),
        ("outlook_desktop", False),
        ("browser", False),
        ("bot", False),
        ("unknown", False),
    ],
)
def test_is_proxy_follows_kind(kind: ClientKind, is_proxy: bool) -> None:
    user_agents = [ua for k, ua in UA_TABLE if k == kind]
    assert len(user_agents) >= 3
    for user_agent in user_agents:
        assert classify_client(user_agent).is_proxy is is_proxy


def test_as_dict_shape() -> None:
    info = classify_client("Mozilla/5.0")
    assert info.as_dict() == {"kind": "apple_mpp", "is_proxy": True}
    assert classify_client("curl/8.4.0").as_dict() == {"kind": "bot", "is_proxy": False}


def test_client_info_is_frozen() -> None:
    info = classify_client("Mozilla/5.0")
    with pytest.raises(AttributeError):
        info.kind = "bot"  # type: ignore[misc]


def test_repeated_user_agent_gives_the_same_result() -> None:
    user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
    assert classify_client(user_agent) is classify_client(user_agent)
