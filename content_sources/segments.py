"""`rfm`: recency, frequency and monetary scores and named segments, from purchases.

Rules read one precomputed record per recipient (one GET in the open's round trip):

    rfm.r, rfm.f, rfm.m        scores 1 to 5 (5 is best: most recent, most often, most spent)
    rfm.recency_days           whole days since the last purchase
    rfm.frequency              purchases in the window (default 365 days)
    rfm.monetary               sum of their `props.amount`
    rfm.segment                the first segment that applies, in the order below, or "other"
    rfm.segments               every segment that applies, in that order
    rfm.computed_at            when these values were computed (they are as of then)

A recipient with no purchase (or before the first computation) has no record: `rfm` is
missing and a variant that reads it falls through (`rfm.segment | default('none')`
gives a value instead).

Purchases. A `purchase` event counts; its `props.amount` is a number >= 0 (anything else
counts as 0). Events themselves are kept only `ATOPEN_EVENTS_RETENTION_DAYS` (90 by
default), too short for a year of frequency or six months of dormancy, so purchases are
copied into a per-recipient ledger kept `history_days` (730 by default): when the events
API stores them (`record_purchases`) and again by the scheduled recompute, which also
scans the events store (`server/records/segments_job.py`). Both are idempotent by event id.

Scores are quintiles over the recipient base (everyone with a purchase in the ledger
history), recomputed on a schedule: the cut points are the values at 20, 40, 60 and 80 %
of the sorted base, and a value equal to a cut point falls in the lower bin of the raw
measure. So ties share a score, and when 60 % of the base bought once, all of them have
F = 1. R scores fewer days higher; F and M score more higher. When a purchase arrives,
that recipient's record is rescored at once against the last computed cut points.

Segments, with R, F, M the scores and the rest raw values (days are whole days):

    new          the first purchase in the ledger history was less than 30 days ago
    hyperactive  R = 5 and F >= 4; or, from the emails, a human click and at least
                 4 human opens in the last 30 days
    fading_star  M >= 4, and declining on every axis: fewer purchases and a smaller
                 amount in the last 90 days than in the 90 days before, and an R score
                 now lower than the one the days since the last purchase had 90 days
                 ago (with today's cut points); or M >= 4 and the emails fading: human
                 opens or clicks in the 90 days before the last 90, and fewer than half
                 as many in the last 90
    zombie       at least 2 purchases in the ledger history (was engaged), and none for
                 180 days or more (six months); or at least 2 human opens or clicks
                 kept, and none for 180 days or more
    loyal        F >= 4 and R >= 3
    at_risk      R <= 2, and F >= 3 or M >= 4

Opens and clicks are the human ones of the records (`engagement`, kept 400 days; see
server/records/classify.py): Apple's prefetches and scanners never make a reader look
engaged. The windows follow what email services call active (opened or clicked in the
last 30 days), recently inactive (engaged before, nothing in the last 90) and dormant
(nothing for 180 days): https://help.marketing360.com/portal/en/kb/articles/engagementsegments6865766407aeb
and https://help.maestra.io/docs/how-to-segment-your-subscribers-based-on-activity.
The segments stay those of buyers: a reader who never bought has no `rfm`, and rules
read their opens and clicks from `engagement` directly.

When several apply, `segment` is the first in that order: the most specific and most
time-sensitive first (a brand-new buyer is welcomed before being called hyperactive; a
fading star or a zombie is flagged before the broader loyal and at-risk groups).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
from redis.asyncio import Redis

from content_sources.engagement import NO_ACTIVITY, Activity, activity_of
from content_sources.events import Event
from content_sources.expressions import Missing
from content_sources.redis_keys import PREFIX, engagement_key, purchases_key, rfm_key
from content_sources.source import OpenRequest, Reach, RedisCommand

PURCHASE = "purchase"
DAY_MS = 86_400_000
PERIOD_DAYS = 90  # fading_star compares the last 90 days with the 90 before
DORMANT_DAYS = 180  # zombie
NEW_DAYS = 30  # new
HYPERACTIVE_OPENS = 4  # human opens in 30 days (with a click) that make a reader hyperactive
# Records are rewritten by every recompute; one that is not (the recipient left the
# base, or the job stopped) disappears after a week rather than going stale forever.
RECORD_TTL_S = 7 * 86_400
OTHER = "other"
CUTS_KEY = f"{PREFIX}rfm-cuts"


@dataclass(frozen=True, slots=True)
class RfmPolicy:
    window_days: int = 365  # frequency and monetary count purchases in this window
    history_days: int = 730  # how long the ledger keeps a purchase ("ever" means this)


DEFAULT_POLICY = RfmPolicy()


@dataclass(frozen=True, slots=True)
class Purchase:
    ts_ms: int
    amount: float


def amount_of(props: Mapping[str, Any]) -> float:
    """`props.amount` when it is a number >= 0, else 0 (the fold script applies the same rule)."""
    value = props.get("amount")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def decode_ledger(raw: object) -> dict[bytes | str, Purchase]:
    """A ledger hash's purchases by field; entries we did not write are skipped (never raises)."""
    purchases: dict[bytes | str, Purchase] = {}
    for field, value in raw.items() if isinstance(raw, dict) else ():
        try:
            ts_ms, amount = orjson.loads(value)
            purchases[field] = Purchase(int(ts_ms), float(amount))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            continue
    return purchases


@dataclass(frozen=True, slots=True)
class Metrics:
    """One recipient's raw values at one instant."""

    recency_days: int
    frequency: int
    monetary: float
    purchases: int  # in the ledger history
    first_days: int
    recency_days_then: int | None  # 90 days ago; None when there was no purchase yet
    fewer_and_smaller: bool  # the last 90 days against the 90 before, in count and amount
    activity: Activity = NO_ACTIVITY  # human opens and clicks of the emails


def metrics_of(
    purchases: Sequence[Purchase],
    now: datetime,
    policy: RfmPolicy,
    activity: Activity = NO_ACTIVITY,
) -> Metrics | None:
    """Raw values from a purchase list (and the emails' `activity`), or None when no
    purchase is in the history."""
    now_ms = int(now.timestamp() * 1000)
    kept = [p for p in purchases if p.ts_ms > now_ms - policy.history_days * DAY_MS]
    if not kept:
        return None
    last = max(p.ts_ms for p in kept)
    window = [p for p in kept if p.ts_ms > now_ms - policy.window_days * DAY_MS]
    start = now_ms - PERIOD_DAYS * DAY_MS  # of the current period; the previous one ends here
    current = [p for p in kept if p.ts_ms > start]
    previous = [p for p in kept if start - PERIOD_DAYS * DAY_MS < p.ts_ms <= start]
    before = [p.ts_ms for p in kept if p.ts_ms <= start]
    return Metrics(
        recency_days=max(0, (now_ms - last) // DAY_MS),
        frequency=len(window),
        monetary=round(sum(p.amount for p in window), 2),
        purchases=len(kept),
        first_days=max(0, (now_ms - min(p.ts_ms for p in kept)) // DAY_MS),
        recency_days_then=(start - max(before)) // DAY_MS if before else None,
        fewer_and_smaller=len(current) < len(previous)
        and sum(p.amount for p in current) < sum(p.amount for p in previous),
        activity=activity,
    )


def cut_points(values: Iterable[float]) -> tuple[float, ...]:
    """The values at 20, 40, 60 and 80 % of the sorted values (none for no values)."""
    ordered = sorted(values)
    n = len(ordered)
    return tuple(ordered[-(-k * n // 5) - 1] for k in range(1, 5)) if n else ()


@dataclass(frozen=True, slots=True)
class Cuts:
    """Quintile cut points of the base, for each raw measure."""

    recency_days: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]

    @staticmethod
    def over(base: Iterable[Metrics]) -> Cuts:
        members = list(base)
        return Cuts(
            cut_points(m.recency_days for m in members),
            cut_points(m.frequency for m in members),
            cut_points(m.monetary for m in members),
        )

    def scores(self, metrics: Metrics) -> tuple[int, int, int]:
        """(R, F, M) from 1 to 5; a value equal to a cut point is in the lower bin."""
        return (
            self.recency_score(metrics.recency_days),
            1 + bisect_left(self.frequency, metrics.frequency),
            1 + bisect_left(self.monetary, metrics.monetary),
        )

    def recency_score(self, days: int) -> int:
        return 5 - bisect_left(self.recency_days, days)

    def encode(self, computed_at: datetime, base: int) -> bytes:
        return orjson.dumps(
            {
                "recency_days": self.recency_days,
                "frequency": self.frequency,
                "monetary": self.monetary,
                "base": base,
                "computed_at": computed_at.isoformat(),
            }
        )

    @staticmethod
    def decode(raw: object) -> Cuts | None:
        try:
            data = orjson.loads(raw)  # type: ignore[arg-type]
            return Cuts(
                tuple(float(v) for v in data["recency_days"]),
                tuple(float(v) for v in data["frequency"]),
                tuple(float(v) for v in data["monetary"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def segments_of(metrics: Metrics, cuts: Cuts) -> tuple[str, ...]:
    """Every named segment that applies, in precedence order (see the module docstring)."""
    r, f, m = cuts.scores(metrics)
    then = metrics.recency_days_then
    declining = metrics.fewer_and_smaller and then is not None and r < cuts.recency_score(then)
    emails = metrics.activity
    reading_a_lot = emails.clicks_30 >= 1 and emails.opens_30 >= HYPERACTIVE_OPENS
    reading_less = emails.previous_90 > 0 and 2 * emails.last_90 < emails.previous_90
    stopped_reading = emails.total >= 2 and (emails.days_since_last or 0) >= DORMANT_DAYS
    rules = {
        "new": metrics.first_days < NEW_DAYS,
        "hyperactive": (r == 5 and f >= 4) or reading_a_lot,
        "fading_star": m >= 4 and (declining or reading_less),
        "zombie": (metrics.purchases >= 2 and metrics.recency_days >= DORMANT_DAYS)
        or stopped_reading,
        "loyal": f >= 4 and r >= 3,
        "at_risk": r <= 2 and (f >= 3 or m >= 4),
    }
    return tuple(name for name, holds in rules.items() if holds)


def record_of(metrics: Metrics, cuts: Cuts, computed_at: datetime) -> bytes:
    r, f, m = cuts.scores(metrics)
    segments = segments_of(metrics, cuts)
    return orjson.dumps(
        {
            "r": r,
            "f": f,
            "m": m,
            "recency_days": metrics.recency_days,
            "frequency": metrics.frequency,
            "monetary": metrics.monetary,
            "segment": segments[0] if segments else OTHER,
            "segments": segments,
            "computed_at": computed_at.astimezone(UTC).isoformat(),
        }
    )


def decode_record(raw: object, zone: tzinfo | None) -> dict[str, object] | None:
    """A stored record as rules see it, or None when absent or not one we wrote."""
    try:
        data = orjson.loads(raw)  # type: ignore[arg-type]
        record: dict[str, object] = {key: int(data[key]) for key in ("r", "f", "m")}
        record["recency_days"] = int(data["recency_days"])
        record["frequency"] = int(data["frequency"])
        record["monetary"] = float(data["monetary"])
        record["segment"] = str(data["segment"])
        record["segments"] = [str(s) for s in data["segments"]]
        record["computed_at"] = datetime.fromisoformat(data["computed_at"]).astimezone(zone)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return record


# Writes a record only while the recipient's ledger exists, so a recompute or an
# incremental update cannot bring back a recipient erased meanwhile.
# KEYS: ledger, record. ARGV: record, ttl seconds.
_WRITE_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


async def write_records(redis: Redis, records: Mapping[str, bytes]) -> int:
    """Store recipients' records in one round trip; returns how many were written."""
    if not records:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for recipient, record in records.items():
            # The script itself, not its digest: a cluster node may not have it cached.
            keys = (purchases_key(recipient), rfm_key(recipient))
            pipe.eval(_WRITE_RECORD, 2, *keys, record, RECORD_TTL_S)
        written = await pipe.execute()
    return sum(int(w) for w in written)


async def record_purchases(
    redis: Redis,
    events: Iterable[tuple[str, Event]],
    now: datetime,
    policy: RfmPolicy = DEFAULT_POLICY,
) -> int:
    """Add newly received purchases to their recipients' ledgers and rescore those recipients.

    Called when events arrive. Purchases older than the events' retention are kept here
    too, so a purchase history can be backfilled through the events API. Scores use the
    cut points of the last recompute; before the first one, only the ledger is written.
    Returns the number of records written.
    """
    horizon = now.timestamp() - policy.history_days * 86_400
    entries: dict[str, dict[str, bytes]] = {}
    for recipient, event in events:
        if event.type == PURCHASE and event.ts.timestamp() > horizon:
            entry = orjson.dumps([int(event.ts.timestamp() * 1000), amount_of(event.props)])
            entries.setdefault(recipient, {})[event.id] = entry
    if not entries:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(CUTS_KEY)
        for recipient, fields in entries.items():
            pipe.hset(purchases_key(recipient), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(purchases_key(recipient), policy.history_days * 86_400)
            pipe.hgetall(purchases_key(recipient))
            pipe.zrange(engagement_key(recipient), 0, -1, withscores=True)
        replies = await pipe.execute()
    cuts = Cuts.decode(replies[0])
    if cuts is None:
        return 0
    records: dict[str, bytes] = {}
    for i, recipient in enumerate(entries):
        ledger, engagement = replies[3 + 4 * i], replies[4 + 4 * i]
        activity = activity_of(engagement if isinstance(engagement, list) else [], now)
        metrics = metrics_of(list(decode_ledger(ledger).values()), now, policy, activity)
        if metrics is not None:
            records[recipient] = record_of(metrics, cuts, now)
    return await write_records(redis, records)


class SegmentsSource:
    name = "rfm"
    depends_on = frozenset({"now"})
    reach = Reach.GROUPED
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.recipient is None:
            return ()
        return (("GET", rfm_key(request.recipient)),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        now = context.get("now")
        zone = now.tzinfo if isinstance(now, datetime) else UTC
        record = decode_record(replies[0], zone) if replies else None
        if record is None:
            return Missing(hint="no RFM record: no purchase yet, or segments not computed yet")
        return record
