"""Reports: a block's rows by variant, client, country or day, and its experiment.

The open log keeps, per block and UTC day, one hash of counters (`keys.stats_key`) and
HyperLogLogs of the human readers and clickers for each variant, client and country.
A report sums the counters over its days and counts the readers with one `PFCOUNT`
over the days' HyperLogLogs (Redis merges them: a reader of three days counts once).

Counted, per row:
    impressions      every image answered (people, prefetches and scanners)
    human_opens      image fetches classified `human`
    machine_fetches  image fetches classified `prefetch` or `scanner`
    unique_readers   recipients with a human open or a human click (a click shows they
                     read it: an Apple Mail reader's opens are all prefetches)
    clicks           clicks classified `human` (a scanner's are in the export only)
    unique_clickers  recipients with a human click
    ctr              unique_clickers / unique_readers, with its 95% Wilson interval

`unique_*` are HyperLogLog estimates: Redis's standard error is 0.81%. Only signed
opens and clicks name a recipient, so only they count as readers and clickers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from redis.asyncio import Redis

from server.blocks.experiments import Split
from server.records.record_keys import Dimension, clickers_key, readers_key, stats_field, stats_key
from server.records.significance import two_proportion_p_value, wilson_interval

By = Literal["variant", "client", "country", "day"]
BY_VALUES: tuple[By, ...] = ("variant", "client", "country", "day")
METRICS = ("impressions", "human_opens", "machine_fetches", "clicks")
SIGNIFICANCE_LEVEL = 0.05

# Counters of one report: (dimension, value) -> metric -> sum over the days.
_Counts = dict[tuple[str, str], dict[str, int]]


async def block_report(
    redis: Redis, block_id: str, days: Sequence[str], by: By, split: Split | None
) -> dict[str, object]:
    """`rows` (and `experiment` for a block with a split) over the UTC `days`."""
    async with redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(stats_key(block_id, day))
        hashes = await pipe.execute()
    per_day = [_parse(h) for h in hashes]
    if by == "day":
        groups = {
            day: [(day, stats_field("variant", v)) for (d, v) in counts if d == "variant"]
            for day, counts in zip(days, per_day, strict=True)
        }
        totals = {
            day: _sum(counts[(d, v)] for d, v in counts if d == "variant")
            for day, counts in zip(days, per_day, strict=True)
        }
    else:
        groups, totals = _by_dimension(days, per_day, by)
    uniques = await _uniques(redis, block_id, groups)
    rows = [_row(key, totals[key], *uniques[key]) for key in _ordered(groups, totals, by)]
    report: dict[str, object] = {"rows": rows}
    if split is not None:
        if by != "variant":
            uniques = await _uniques(redis, block_id, _by_dimension(days, per_day, "variant")[0])
        report["experiment"] = _experiment(split, uniques)
    return report


def _parse(raw: Mapping[bytes, bytes]) -> _Counts:
    counts: _Counts = defaultdict(dict)
    for field, value in raw.items():
        try:
            dimension, name, metric = field.decode().split("=")
            counts[(dimension, name)][metric] = int(value)
        except ValueError:
            continue  # not a counter this version writes
    return counts


def _sum(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for part in parts:
        for metric, n in part.items():
            total[metric] += n
    return total


def _by_dimension(
    days: Sequence[str], per_day: Sequence[_Counts], dimension: Dimension
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, dict[str, int]]]:
    """For each value of `dimension`: its (day, name) HyperLogLogs and summed counters."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    parts: dict[str, list[Mapping[str, int]]] = defaultdict(list)
    for day, counts in zip(days, per_day, strict=True):
        for (d, value), metrics in counts.items():
            if d == dimension:
                groups[value].append((day, stats_field(dimension, value)))
                parts[value].append(metrics)
    return dict(groups), {value: _sum(p) for value, p in parts.items()}


async def _uniques(
    redis: Redis, block_id: str, groups: Mapping[str, Sequence[tuple[str, str]]]
) -> dict[str, tuple[int, int]]:
    """Each group's unique readers and clickers: one PFCOUNT over its HyperLogLogs each."""
    names = list(groups)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            day_names = groups[name]
            if day_names:
                # As a raw command: redis-py's cluster pipeline refuses `pfcount`, though
                # a block's HyperLogLogs share its slot.
                pipe.execute_command(
                    "PFCOUNT", *(readers_key(block_id, day, n) for day, n in day_names)
                )
                pipe.execute_command(
                    "PFCOUNT", *(clickers_key(block_id, day, n) for day, n in day_names)
                )
        replies = iter(await pipe.execute())
    uniques = {}
    for name in names:
        readers, clickers = (next(replies), next(replies)) if groups[name] else (0, 0)
        # Estimates: never more clickers than readers (every clicker is a reader).
        uniques[name] = (int(readers), min(int(clickers), int(readers)))
    return uniques


def _ordered(
    groups: Mapping[str, object], totals: Mapping[str, Mapping[str, int]], by: By
) -> list[str]:
    """Days in order (each day of the span, those without opens too); other rows by
    impressions, most first, then by name."""
    if by == "day":
        return sorted(groups)
    return sorted(groups, key=lambda k: (-totals[k].get("impressions", 0), k))


def _rate(readers: int, clickers: int) -> dict[str, float | None]:
    if readers == 0:
        return {"ctr": None, "ctr_low": None, "ctr_high": None}
    low, high = wilson_interval(clickers, readers)
    return {"ctr": clickers / readers, "ctr_low": low, "ctr_high": high}


def _row(key: str, counts: Mapping[str, int], readers: int, clickers: int) -> dict[str, object]:
    return {
        "key": key,
        "impressions": counts.get("impressions", 0),
        "human_opens": counts.get("human_opens", 0),
        "machine_fetches": counts.get("machine_fetches", 0),
        "unique_readers": readers,
        "clicks": counts.get("clicks", 0),
        "unique_clickers": clickers,
        **_rate(readers, clickers),
    }


def _experiment(split: Split, variants: Mapping[str, tuple[int, int]]) -> dict[str, object]:
    """Each arm against the control (the holdout's default, else the first arm): its
    CTR, lift over the control's CTR and the two-proportion test's p-value."""
    arms = list(split.weights)
    control = "default" if split.holdout_percent > 0 else arms[0]
    control_readers, control_clickers = variants.get(control, (0, 0))
    control_ctr = control_clickers / control_readers if control_readers else None
    compared = []
    for arm in arms:
        if arm == control:
            continue
        readers, clickers = variants.get(arm, (0, 0))
        rate = _rate(readers, clickers)
        ctr = rate["ctr"]
        lift = p_value = None
        if ctr is not None and control_ctr:
            lift = (ctr - control_ctr) / control_ctr
        if readers and control_readers:
            p_value = two_proportion_p_value(clickers, readers, control_clickers, control_readers)
        compared.append(
            {
                "variant": arm,
                **rate,
                "lift": lift,
                "p_value": p_value,
                "significant": p_value is not None and p_value < SIGNIFICANCE_LEVEL,
            }
        )
    return {"control": control, "arms": compared}
