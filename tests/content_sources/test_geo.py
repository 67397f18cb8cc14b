"""`geo`: the location policy by client kind, the last seen location, and the database,
on a real Redis and MaxMind's City test database."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geoip2.database
import orjson
import pytest
import redis.asyncio as aioredis
from support import LONDON_GEO, LONDON_IP

from content_sources import gather_context
from content_sources.client import ClientSource
from content_sources.clock import ClockSource
from content_sources.expressions import MissingValueError, Template
from content_sources.geo import GeoSource, remember_commands
from content_sources.params import ParamsSource
from content_sources.profile import ProfileSource
from content_sources.redis_keys import last_seen_key, profile_key
from content_sources.source import OpenRequest, Source
from server.settings import SettingsError, load_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "geoip"
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

USER_AGENTS = {
    "apple_mpp": "Mozilla/5.0",
    "gmail_proxy": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
    "(via ggpht.com GoogleImageProxy)",
    "yahoo_proxy": "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "outlook_desktop": "Microsoft Outlook 16.0.17328; Pro",
    "browser": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko)",
    "bot": "curl/8.5.0",
    "unknown": "",
}

MILTON_IP = "216.160.83.56"  # US, Milton WA 98354
LINKOPING_IP = "89.160.20.112"  # SE, Linköping
US_ONLY_IP = "149.101.100.1"  # US, no city
PRIVATE_IP = "10.1.2.3"

MANCHESTER = {
    "country": "gb",
    "city": "Manchester",
    "postal": "M1 1AE",
    "lat": 53.4808,
    "lon": -2.2426,
    "tz": "Europe/London",
}
PROFILE_GEO = {**MANCHESTER, "country": "GB", "source": "profile"}
NONE = {"source": "none"}


@pytest.fixture
async def store(redis_url: str) -> Any:
    async with aioredis.from_url(redis_url) as client:
        yield client


def sources(reader: geoip2.database.Reader | None) -> tuple[Source, ...]:
    """The sources `geo` reads, in the order the app builds them."""
    return (ProfileSource(), ClockSource(), ClientSource(), GeoSource(reader), ParamsSource())


async def open_geo(
    store: aioredis.Redis,
    reader: geoip2.database.Reader | None,
    kind: str,
    ip: str | None,
    recipient: str | None = "u1",
) -> dict[str, object]:
    """The context of one open by a client of that kind from that address."""
    request = OpenRequest(at=NOW, recipient=recipient, user_agent=USER_AGENTS[kind], client_ip=ip)
    context = await gather_context(store, sources(reader), request, frozenset({"geo"}))
    client = context["client"]
    assert isinstance(client, dict)
    assert client["kind"] == kind
    return context


async def set_profile(store: aioredis.Redis, profile: dict[str, object]) -> None:
    await store.set(profile_key("u1"), orjson.dumps(profile))


# Each client kind, by (IP known, profile location): both, IP only, profile only, neither.
# "gb" is the IP's country alone.
POLICY = {
    "browser": ("ip", "ip", "profile", "none"),
    "outlook_desktop": ("ip", "ip", "profile", "none"),
    "unknown": ("ip", "ip", "profile", "none"),
    "apple_mpp": ("profile", "gb", "profile", "none"),
    "gmail_proxy": ("profile", "none", "profile", "none"),
    "yahoo_proxy": ("profile", "none", "profile", "none"),
    "bot": ("profile", "none", "profile", "none"),
}
EXPECTED = {
    "ip": LONDON_GEO,
    "profile": PROFILE_GEO,
    "gb": {"country": "GB", "source": "ip"},
    "none": NONE,
}
CASES = [
    pytest.param(kind, ip_known, has_profile, EXPECTED[row[i]], id=f"{kind}-{i}")
    for kind, row in POLICY.items()
    for i, (ip_known, has_profile) in enumerate(
        [(True, True), (True, False), (False, True), (False, False)]
    )
]


@pytest.mark.parametrize(("kind", "ip_known", "has_profile", "expected"), CASES)
async def test_policy_by_client_kind(
    store: aioredis.Redis,
    reader: geoip2.database.Reader,
    kind: str,
    ip_known: bool,
    has_profile: bool,
    expected: dict[str, object],
) -> None:
    await set_profile(store, {"first_name": "Ann", **(MANCHESTER if has_profile else {})})
    context = await open_geo(store, reader, kind, LONDON_IP if ip_known else PRIVATE_IP)
    assert context["geo"] == expected


async def test_gmail_proxy_open_uses_the_profiles_city_not_googles(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    warsaw = {"city": "Warsaw", "country": "PL", "lat": 52.2297, "lon": 21.0122}
    await set_profile(store, {"first_name": "Ann", **warsaw, "tz": "Europe/Warsaw"})
    # The proxy's address is in the database (Milton, WA): it must not be used.
    context = await open_geo(store, reader, "gmail_proxy", MILTON_IP)
    assert context["geo"] == {**warsaw, "tz": "Europe/Warsaw", "source": "profile"}
    assert Template("Weather in {{ geo.city }}").render(context) == "Weather in Warsaw"
    # The same recipient reading in a browser from that address is in Milton.
    browser = await open_geo(store, reader, "browser", MILTON_IP)
    assert browser["geo"] == {
        "country": "US",
        "city": "Milton",
        "lat": 47.2513,
        "lon": -122.3149,
        "tz": "America/Los_Angeles",
        "postal": "98354",
        "source": "ip",
    }


async def test_apple_mpp_takes_the_ips_country_and_never_its_city(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    # The relay address says Linköping, Sweden; the profile has a city but no country.
    stockholm = {"city": "Stockholm", "lat": 59.3293, "lon": 18.0686}
    await set_profile(store, stockholm)
    context = await open_geo(store, reader, "apple_mpp", LINKOPING_IP)
    assert context["geo"] == {"country": "SE", **stockholm, "source": "profile"}
    # A profile in another country does not describe where the relay puts the reader.
    await set_profile(store, MANCHESTER)
    context = await open_geo(store, reader, "apple_mpp", LINKOPING_IP)
    assert context["geo"] == {"country": "SE", "source": "ip"}
    with pytest.raises(MissingValueError):
        Template("{{ geo.city }}").render(context)
    assert Template("{{ geo.city | default('your city') }}").render(context) == "your city"


async def test_an_address_the_database_cannot_place_falls_back_to_the_profile(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await set_profile(store, MANCHESTER)
    for ip in (None, "", "not-an-address", "8.8.8.8", "127.0.0.1", "::1", PRIVATE_IP):
        assert (await open_geo(store, reader, "browser", ip))["geo"] == PROFILE_GEO, ip
    # Without a database, every address is unknown.
    assert (await open_geo(store, None, "browser", LONDON_IP))["geo"] == PROFILE_GEO


async def test_a_country_level_answer_has_no_coordinates(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    # The database places this address in the middle of the US: no use as a point.
    context = await open_geo(store, reader, "browser", US_ONLY_IP)
    assert context["geo"] == {"country": "US", "tz": "America/Chicago", "source": "ip"}


async def test_without_a_recipient_only_the_ip_is_used(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    context = await open_geo(store, reader, "browser", LONDON_IP, recipient=None)
    assert context["geo"] == LONDON_GEO
    context = await open_geo(store, reader, "gmail_proxy", LONDON_IP, recipient=None)
    assert context["geo"] == NONE


async def test_a_real_open_is_remembered_for_later_proxy_opens(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await set_profile(store, {"first_name": "Ann"})
    assert (await open_geo(store, reader, "gmail_proxy", None))["geo"] == NONE

    # Ann reads in her browser in Milton: that open is remembered...
    real = await open_geo(store, reader, "browser", MILTON_IP)
    commands = remember_commands("u1", real, ttl_s=3600)
    assert commands
    async with store.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        await pipe.execute()
    assert 0 < await store.ttl(last_seen_key("u1")) <= 3600

    # ... so her next Gmail open (from Google's address) knows where she was.
    later = await open_geo(store, reader, "gmail_proxy", LONDON_IP)
    seen = real["geo"]
    assert isinstance(seen, dict)
    assert later["geo"] == {**seen, "source": "profile"}
    assert Template("{{ geo.city }}").render(later) == "Milton"


@pytest.mark.parametrize("kind", ["gmail_proxy", "yahoo_proxy", "apple_mpp", "bot"])
async def test_opens_that_are_not_the_reader_are_never_remembered(
    store: aioredis.Redis, reader: geoip2.database.Reader, kind: str
) -> None:
    context = await open_geo(store, reader, kind, LONDON_IP)
    assert remember_commands("u1", context, ttl_s=3600) == ()


async def test_only_an_ip_location_of_a_known_recipient_is_remembered(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await set_profile(store, MANCHESTER)
    from_profile = await open_geo(store, reader, "browser", PRIVATE_IP)
    assert from_profile["geo"] == PROFILE_GEO
    assert remember_commands("u1", from_profile, ttl_s=3600) == ()
    real = await open_geo(store, reader, "browser", LONDON_IP)
    assert remember_commands(None, real, ttl_s=3600) == ()
    assert remember_commands("u1", {"geo": LONDON_GEO}, ttl_s=3600) == ()


async def test_the_profile_wins_and_the_last_seen_location_only_completes_it(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    milton = {"country": "US", "city": "Milton", "lat": 47.2513, "lon": -122.3149}
    await store.set(last_seen_key("u1"), orjson.dumps({**milton, "postal": "98354"}))
    # The profile knows the country only; the last seen location agrees and adds to it.
    await set_profile(store, {"country": "US", "tz": "America/New_York"})
    context = await open_geo(store, reader, "gmail_proxy", None)
    assert context["geo"] == {
        **milton,
        "postal": "98354",
        "tz": "America/New_York",
        "source": "profile",
    }
    # A profile elsewhere is not mixed with a last seen place that contradicts it.
    await set_profile(store, {"country": "PL", "city": "Warsaw"})
    context = await open_geo(store, reader, "gmail_proxy", None)
    assert context["geo"] == {"country": "PL", "city": "Warsaw", "source": "profile"}


async def test_profile_fields_that_are_not_a_location_are_ignored(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await set_profile(
        store,
        {"country": "Poland", "city": "  ", "lat": 95, "lon": 10, "tz": "Mars/Base", "postal": {}},
    )
    assert (await open_geo(store, reader, "gmail_proxy", None))["geo"] == NONE
    # Coordinates only as a pair; a postal code may be a number; a zone alone is no place.
    await set_profile(store, {"lat": 52.2, "postal": 1234, "tz": "Europe/Warsaw"})
    geo = (await open_geo(store, reader, "gmail_proxy", None))["geo"]
    assert geo == {"postal": "1234", "tz": "Europe/Warsaw", "source": "profile"}
    await set_profile(store, {"tz": "Europe/Warsaw"})
    assert (await open_geo(store, reader, "gmail_proxy", None))["geo"] == NONE


async def test_a_broken_last_seen_value_is_ignored(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await set_profile(store, MANCHESTER)
    await store.set(last_seen_key("u1"), b"{not json")
    assert (await open_geo(store, reader, "gmail_proxy", None))["geo"] == PROFILE_GEO
    await store.set(last_seen_key("u1"), orjson.dumps(["GB", "London"]))
    assert (await open_geo(store, reader, "gmail_proxy", None))["geo"] == PROFILE_GEO


def test_the_database_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "GeoLite2-City.mmdb"
    with pytest.raises(
        SettingsError, match=f"^ATOPEN_GEOIP_DB: no such file: {re.escape(str(missing))}$"
    ):
        load_settings({"ATOPEN_GEOIP_DB": str(missing)})


def test_the_database_must_be_a_maxmind_database() -> None:
    with pytest.raises(SettingsError, match=r"^ATOPEN_GEOIP_DB: .* is not a MaxMind-format"):
        load_settings({"ATOPEN_GEOIP_DB": str(DATA / "LICENSE-MIT")})


def test_the_database_must_be_a_city_database() -> None:
    with pytest.raises(
        SettingsError,
        match=r"^ATOPEN_GEOIP_DB: .* is a GeoLite2-ASN database; a City database is needed",
    ):
        load_settings({"ATOPEN_GEOIP_DB": str(DATA / "GeoLite2-ASN-Test.mmdb")})
