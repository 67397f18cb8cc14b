"""`geo`: where the reader is, said only as precisely as the open honestly tells.

An image fetch carries an IP address, but whose address it is depends on who fetched
(each client class's `address_tells` in `content_sources/client.py`):

- the reader's own mail app or browser (`browser`, `outlook_desktop`, `unknown`): the
  IP locates the reader (`source: "ip"`), as well as a City database can;
- Gmail's and Yahoo's image proxies, and bots and mail gateways: the IP is the
  provider's data centre and says nothing about the reader, so the location comes
  from what we know of the recipient (`source: "profile"`);
- Apple Mail Privacy Protection: Apple's relay addresses are declared with the
  reader's country but only a coarse, often wrong, city, so the IP gives the country
  and the profile the rest.

What we know of the recipient is the profile's own location fields (`country`, `city`,
`postal`, `lat`, `lon`, `tz`), completed by the last location a real open of theirs
showed (remembered under its own key, so a marketer's `PUT` of the profile never
erases it and it never overrides what the marketer wrote). When neither the IP nor
the profile gives a place, `geo` is `{"source": "none"}` and every location field is
missing, so a variant that needs one falls through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb
import orjson

from content_sources.client import AddressTells, classify_client, client_class
from content_sources.clock import zone
from content_sources.documents import decode_object
from content_sources.redis_keys import last_seen_key
from content_sources.source import OpenRequest, Reach, RedisCommand

GEOIP_SETTING = "ATOPEN_GEOIP_DB"

_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Location:
    """A place as `geo` shows it; absent parts are None here and left out of the value."""

    country: str | None = None
    city: str | None = None
    postal: str | None = None
    lat: float | None = None
    lon: float | None = None
    tz: str | None = None

    @property
    def is_place(self) -> bool:
        """Whether it says where (a time zone alone does not)."""
        return any(v is not None for v in (self.country, self.city, self.postal, self.lat))

    @property
    def is_finer_than_country(self) -> bool:
        return any(v is not None for v in (self.city, self.postal, self.lat))

    def agrees_with(self, other: Location) -> bool:
        """No part that both name differs: the two can describe the same place."""
        for mine, theirs in (
            (self.country, other.country),
            (self.city, other.city),
            (self.postal, other.postal),
        ):
            if mine is not None and theirs is not None and mine.casefold() != theirs.casefold():
                return False
        return True

    def completed_by(self, other: Location) -> Location:
        """Our parts, with the ones we lack taken from `other` (coordinates as a pair)."""
        has_point = self.lat is not None
        return Location(
            country=self.country or other.country,
            city=self.city or other.city,
            postal=self.postal or other.postal,
            lat=self.lat if has_point else other.lat,
            lon=self.lon if has_point else other.lon,
            tz=self.tz or other.tz,
        )

    def as_value(self, source: str) -> dict[str, object]:
        value: dict[str, object] = {
            "country": self.country,
            "city": self.city,
            "lat": self.lat,
            "lon": self.lon,
            "tz": self.tz,
            "postal": self.postal,
        }
        return {**{k: v for k, v in value.items() if v is not None}, "source": source}

    @staticmethod
    def from_fields(fields: Mapping[str, object]) -> Location:
        """The location fields of a profile or a remembered location; bad ones are ignored."""
        lat, lon = _number(fields.get("lat"), 90), _number(fields.get("lon"), 180)
        has_point = lat is not None and lon is not None
        tz = _text(fields.get("tz"))
        return Location(
            country=_country(fields.get("country")),
            city=_text(fields.get("city")),
            postal=_text(fields.get("postal")),
            lat=lat if has_point else None,
            lon=lon if has_point else None,
            tz=tz if tz and zone(tz) is not None else None,
        )


def _country(value: object) -> str | None:
    """An ISO 3166-1 alpha-2 code, as the database gives (a country's name is ignored)."""
    code = _text(value)
    if code is None or len(code) != 2 or not (code.isascii() and code.isalpha()):
        return None
    return code.upper()


def _text(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a postal code stored as a number
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        return None
    return value.strip()


def _number(value: object, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and -limit <= number <= limit else None


def decide(kind: object, ip: Location | None, known: Location) -> dict[str, object]:
    """The policy: `geo` for a client kind, the IP's location and the recipient's.

    `ip` is None when the address is unknown, private or not in the database; `known`
    is the profile's location completed by the last seen one.
    """
    address_tells = client_class(kind).address_tells
    if ip is not None and address_tells is not AddressTells.NOTHING:
        if address_tells is AddressTells.PLACE:
            return ip.as_value("ip")
        country = Location(country=ip.country)
        if not known.agrees_with(country):
            return country.as_value("ip")
        merged = country.completed_by(known)
        return merged.as_value("profile" if known.is_finer_than_country else "ip")
    if known.is_place:
        return known.as_value("profile")
    return {"source": "none"}


class GeoDatabaseError(ValueError):
    """The GeoIP database cannot be used; the message names the setting that gave it."""


def open_geoip(path: str | Path) -> geoip2.database.Reader:
    """Open a City database once at startup; a clear error naming the setting otherwise."""
    try:
        reader = geoip2.database.Reader(str(path))
    except FileNotFoundError:
        raise GeoDatabaseError(f"{GEOIP_SETTING}: no such file: {path}") from None
    except maxminddb.InvalidDatabaseError:
        raise GeoDatabaseError(
            f"{GEOIP_SETTING}: {path} is not a MaxMind-format (.mmdb) database"
        ) from None
    except OSError as exc:
        raise GeoDatabaseError(f"{GEOIP_SETTING}: cannot read {path}: {exc.strerror}") from None
    kind = reader.metadata().database_type
    if "City" not in kind:
        reader.close()
        raise GeoDatabaseError(
            f"{GEOIP_SETTING}: {path} is a {kind} database; a City database is needed "
            "(e.g. GeoLite2-City or GeoIP2-City)"
        )
    return reader


class GeoSource:
    """`geo`: `{country, city, lat, lon, tz, postal, source}`, by the policy above."""

    name = "geo"
    depends_on = frozenset({"client", "profile"})  # whose address it is; the stored location
    reach = Reach.PERSONAL
    shared_reads = False
    # Working the reader's address out (the request's client address) is its cost.
    reads_address = True
    memo_part = None
    after_round_trip = None

    @property
    def always_build(self) -> bool:
        """With a database, every real open may teach the recipient's last seen
        location, whether or not the block shows it."""
        return self._lookup is not None

    def __init__(self, reader: geoip2.database.Reader | None) -> None:
        # Proxies and relays fetch from a few addresses over and over: keep their answers.
        self._lookup = None if reader is None else lru_cache(maxsize=4096)(partial(_city, reader))

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.recipient is None:
            return ()
        return (("GET", last_seen_key(request.recipient)),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        client = context.get("client")
        kind = client.get("kind") if isinstance(client, Mapping) else None
        profile = context.get("profile")
        known = Location.from_fields(profile if isinstance(profile, Mapping) else {})
        last_seen = Location.from_fields((decode_object(replies[0]) if replies else None) or {})
        if last_seen.is_place and known.agrees_with(last_seen):
            known = known.completed_by(last_seen)
        return decide(kind, self.ip_location(request.client_ip), known)

    def ip_location(self, address: str | None) -> Location | None:
        """What the database says of an address: None unless it knows at least the country."""
        if self._lookup is None or not address:
            return None
        return self._lookup(address)

    def coordinates_before_replies(self, request: OpenRequest) -> tuple[float, float] | None:
        """The (lat, lon) `build` will give when they come from the IP alone.

        Known before the open's round trip, so what depends on the place (the nearest
        stores) can be fetched in that same trip.
        """
        kind = classify_client(request.user_agent).kind
        value = decide(kind, self.ip_location(request.client_ip), Location())
        lat, lon = value.get("lat"), value.get("lon")
        if value["source"] == "ip" and isinstance(lat, float) and isinstance(lon, float):
            return lat, lon
        return None


def _city(reader: geoip2.database.Reader, address: str) -> Location | None:
    try:
        found = reader.city(address)
    except (geoip2.errors.GeoIP2Error, maxminddb.InvalidDatabaseError, ValueError):
        return None
    country = found.country.iso_code
    if not country:
        return None
    # Without a city the coordinates only mark the middle of the country: leave them out.
    city = found.city.name
    lat, lon = found.location.latitude, found.location.longitude
    has_point = city is not None and lat is not None and lon is not None
    return Location(
        country=country,
        city=city,
        postal=found.postal.code,
        lat=lat if has_point else None,
        lon=lon if has_point else None,
        tz=found.location.time_zone,
    )


def remember_commands(
    recipient: str | None, context: Mapping[str, object], ttl_s: int
) -> tuple[RedisCommand, ...]:
    """After an open: the commands that remember its location as the last seen one.

    Only a real open counts: the reader's own client (not a proxy, relay or bot) and a
    location that came from its IP. Anything else gives no commands.
    """
    client = context.get("client")
    geo = context.get("geo")
    if recipient is None or not isinstance(client, Mapping) or not isinstance(geo, Mapping):
        return ()
    tells = client_class(client.get("kind")).address_tells
    if tells is not AddressTells.PLACE or geo.get("source") != "ip":
        return ()
    seen = {k: v for k, v in geo.items() if k != "source"}
    return (("SET", last_seen_key(recipient), orjson.dumps(seen).decode(), "EX", ttl_s),)
