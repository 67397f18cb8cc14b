"""`stores`: the shop's physical stores, and which are nearest the reader.

Stores are JSON documents in one Redis hash, indexed by position in one geo set; both
keys share a hash tag, so a write changes both in one transaction and one Lua script
reads both, even on Redis Cluster. In rules, `stores.nearest(n=1, max_km=...)` lists
the nearest stores with their `distance` (in miles for readers in the countries that
use them, else km), `distance_unit` and `today_hours`.

The search needs the reader's coordinates, which `geo` gives. When they come from the
IP alone they are known before the open's round trip, and the search rides in it;
when they come from the profile they are known only after, and `complete_stores` makes
a second, single-command round trip. Either way the search is one script: GEOSEARCH
for up to `MAX_NEAREST` stores within the configured radius, then their documents.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.clock import zone
from content_sources.documents import JsonObject, decode_object, without_nulls
from content_sources.expressions import Missing
from content_sources.geo import GeoSource
from content_sources.redis_keys import PREFIX
from content_sources.rule_context import RuleContext
from content_sources.source import OpenRequest, Reach, RedisCommand

log = logging.getLogger("atopen.stores")

STORES_KEY = f"{PREFIX}stores:{{stores}}"  # hash: store id -> JSON document
STORES_GEO_KEY = f"{PREFIX}stores-geo:{{stores}}"  # geo set of store ids
MAX_NEAREST = 10  # the most `nearest(n=...)` may ask for: what one search fetches
DEFAULT_RADIUS_KM = 1000.0
# Countries whose readers think in miles (road distances): the US, the UK, Liberia, Myanmar.
MILES_COUNTRIES = frozenset({"US", "GB", "LR", "MM"})
KM_PER_MILE = 1.609344
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# KEYS: the geo set, the documents. ARGV: lon, lat, radius km, count.
# Returns {id, distance km, document} for each store found, nearest first.
_NEAREST_SCRIPT = """
local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
                         'BYRADIUS', ARGV[3], 'km', 'ASC', 'COUNT', ARGV[4], 'WITHDIST')
if #found == 0 then return {} end
local ids = {}
for i, entry in ipairs(found) do ids[i] = entry[1] end
local docs = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i, entry in ipairs(found) do
  if docs[i] then out[#out + 1] = {entry[1], entry[2], docs[i]} end
end
return out
"""

Point = tuple[float, float]  # (lat, lon)


@dataclass(frozen=True, slots=True)
class Nearby:
    id: str
    distance_km: float
    document: JsonObject


@dataclass(frozen=True, slots=True)
class Fetched:
    """The stores found around one point."""

    at: Point
    stores: tuple[Nearby, ...]


def nearest_command(at: Point, radius_km: float) -> RedisCommand:
    lat, lon = at
    return (
        "EVAL",
        _NEAREST_SCRIPT,
        2,
        STORES_GEO_KEY,
        STORES_KEY,
        lon,
        lat,
        radius_km,
        MAX_NEAREST,
    )


def parse_nearest(at: Point, reply: object) -> Fetched:
    """The script's reply; entries that are not what it writes are skipped (never raises)."""
    found: list[Nearby] = []
    for entry in reply if isinstance(reply, list) else ():
        if not isinstance(entry, list) or len(entry) != 3:
            continue
        raw_id, raw_distance, raw_document = entry
        document = decode_object(raw_document)
        try:
            store_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            distance = float(raw_distance)
        except (TypeError, ValueError, UnicodeDecodeError):
            continue
        if document is not None:
            found.append(Nearby(store_id, distance, document))
    return Fetched(at, tuple(found))


def _point(geo: object) -> Point | None:
    if not isinstance(geo, Mapping):
        return None
    lat, lon = geo.get("lat"), geo.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        return float(lat), float(lon)
    return None


class StoresView:
    """What `stores` is in a rule: `nearest(n, max_km)` around the reader's `geo` point."""

    __slots__ = ("_at", "_fetched", "_miles", "_now", "radius_km")

    def __init__(self, geo: object, now: object, fetched: Fetched | None, radius_km: float) -> None:
        self._at = _point(geo)
        country = geo.get("country") if isinstance(geo, Mapping) else None
        self._miles = country in MILES_COUNTRIES
        self._now = now if isinstance(now, datetime) else None
        self._fetched = fetched if fetched is not None and fetched.at == self._at else None
        self.radius_km = radius_km

    def around(self, geo: object, now: object, fetched: Fetched | None = None) -> StoresView:
        """The same search for `geo` and `now`, keeping what was found if it is for that point."""
        return StoresView(geo, now, fetched or self._fetched, self.radius_km)

    @property
    def pending(self) -> Point | None:
        """The point still to search around, if the reader has one and it was not searched."""
        return self._at if self._fetched is None else None

    def nearest(self, n: int = 1, max_km: float | None = None) -> object:
        """Up to `n` stores nearest the reader within `max_km` (at most the configured
        radius), nearest first; a missing value when the reader's place is unknown."""
        if self._at is None:
            return Missing(hint="the reader's location is unknown (geo has no lat/lon)")
        if self._fetched is None:
            return Missing(hint="the stores near the reader could not be fetched")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NEAREST:
            raise ValueError(f"stores.nearest: n must be a whole number from 1 to {MAX_NEAREST}")
        radius = self.radius_km
        if max_km is not None:
            if isinstance(max_km, bool) or not isinstance(max_km, int | float) or max_km <= 0:
                raise ValueError("stores.nearest: max_km must be a number above 0")
            radius = min(radius, max_km)
        within = (s for s in self._fetched.stores if s.distance_km <= radius)
        return [self._shown(store) for store in islice(within, n)]

    def _shown(self, store: Nearby) -> dict[str, object]:
        distance = store.distance_km / KM_PER_MILE if self._miles else store.distance_km
        shown: dict[str, object] = {
            **store.document,
            "id": store.id,
            "distance": round(distance, 1),
            "distance_unit": "mi" if self._miles else "km",
        }
        hours = self._today_hours(store.document)
        if hours is not None:
            shown["today_hours"] = hours
        return shown

    def _today_hours(self, document: JsonObject) -> str | None:
        """The store's hours for today, where "today" is the store's own day when it has a
        `tz` (else the reader's)."""
        hours = document.get("hours")
        if self._now is None or not isinstance(hours, Mapping):
            return None
        store_zone = zone(document["tz"]) if isinstance(document.get("tz"), str) else None
        today = self._now.astimezone(store_zone or self._now.tzinfo)
        value = hours.get(WEEKDAYS[today.weekday()])
        return value if isinstance(value, str) else None


async def complete_stores(redis: Redis, context: RuleContext) -> None:
    """The open's second step, after its round trip: search around `geo`'s point if the
    first trip could not. Also follows a `geo` or `now` replaced after the round trip (a
    preview's). A store failure leaves `stores.nearest()` missing; it never raises one."""
    view = context.get("stores")
    if not isinstance(view, StoresView):
        return
    geo, now = context.get("geo"), context.get("now")
    view = view.around(geo, now)
    at = view.pending
    if at is not None:
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(*nearest_command(at, view.radius_km))
                (reply,) = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not search the stores near the reader: %r", exc)
        else:
            view = view.around(geo, now, parse_nearest(at, reply))
    context["stores"] = view


class ShopsSource:
    """`stores`, searched in the open's round trip when the IP places the reader."""

    name = "stores"
    depends_on = frozenset({"geo", "now"})
    reach = Reach.GROUPED
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    # Where to search is known only after the round trip when it comes from the profile.
    after_round_trip = staticmethod(complete_stores)

    def __init__(self, geo: GeoSource, radius_km: float = DEFAULT_RADIUS_KM) -> None:
        self._geo = geo
        self._radius_km = radius_km

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        at = self._geo.coordinates_before_replies(request)
        return () if at is None else (nearest_command(at, self._radius_km),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        at = self._geo.coordinates_before_replies(request) if replies else None
        fetched = parse_nearest(at, replies[0]) if at is not None else None
        return StoresView(context.get("geo"), context.get("now"), fetched, self._radius_km)


class StoreDirectory:
    """Writes and reads stores: the document and its place in the index change together."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, store_id: str) -> JsonObject | None:
        return decode_object(await self._redis.hget(STORES_KEY, store_id))

    async def put(self, store_id: str, store: JsonObject) -> tuple[JsonObject, bool]:
        """Create or replace; returns the stored document and whether it is new."""
        stored: JsonObject = without_nulls(store)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(STORES_KEY, store_id, orjson.dumps(stored))
            pipe.geoadd(STORES_GEO_KEY, [stored["lon"], stored["lat"], store_id])
            created, _ = await pipe.execute()
        return stored, bool(created)

    async def put_many(self, stores: Mapping[str, JsonObject]) -> None:
        """All or nothing: one MULTI/EXEC transaction."""
        documents: list[str | bytes] = []
        places: list[str | float] = []
        for store_id, store in stores.items():
            documents += [store_id, orjson.dumps(without_nulls(store))]
            places += [store["lon"], store["lat"], store_id]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(STORES_KEY, items=documents)
            pipe.geoadd(STORES_GEO_KEY, places)
            await pipe.execute()

    async def page(
        self, after: str | None, limit: int
    ) -> tuple[list[tuple[str, JsonObject]], str | None]:
        """Up to `limit` stores by id, from the first id after `after`; and the id to ask
        the next page after, None on the last. Ids are sorted, so pages hold still while
        stores are added or removed elsewhere in the list."""
        keys = await self._redis.hkeys(STORES_KEY)
        ids = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in keys)
        start = 0 if after is None else bisect_right(ids, after)
        chosen = ids[start : start + limit]
        raws = await self._redis.hmget(STORES_KEY, chosen) if chosen else []
        stores = [
            (store_id, store)
            for store_id, raw in zip(chosen, raws, strict=True)
            if (store := decode_object(raw)) is not None  # deleted since the ids were read
        ]
        more = start + limit < len(ids)
        return stores, chosen[-1] if more else None

    async def delete(self, store_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(STORES_KEY, store_id)
            pipe.zrem(STORES_GEO_KEY, store_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)
