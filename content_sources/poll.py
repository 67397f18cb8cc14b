"""`poll`: a block's live tally and the recipient's own vote, and how votes are stored.

Rules and templates see `poll.total`, `poll.options.KEY.count`, `poll.options.KEY.percent`
and `poll.mine` (the recipient's vote; missing when they have not voted). The tally is
one hash per block (option -> count), shared by every open; a recipient's votes are one
hash per recipient (block -> option), erased with the rest of their data. Both are read
in the open's one round trip.

A vote is kept once per recipient and block, the latest winning. It is recorded in two
atomic steps: a script swaps the recipient's vote and answers the one it replaced, then
one MULTI moves the count from that option to the new one. Each change of a vote is
handed to exactly one writer, so however many clicks arrive at once, a recipient counts
once. (Two keys in one script would not do: on Redis Cluster the tally and the
recipient's keys live in different slots.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from content_sources.expressions import Missing
from content_sources.redis_keys import poll_tally_key, poll_votes_key
from content_sources.source import OpenRequest, Reach, RedisCommand

# KEYS: the recipient's votes. ARGV: block id, option. Answers the vote replaced (nil
# for a first vote); the vote is set either way.
_SWAP_VOTE = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return previous
"""


def percentages(counts: Sequence[int]) -> list[int]:
    """Whole percentages of `counts` that add up to exactly 100 (all 0 when nothing is
    counted): each share rounded down, then the points left over go to the largest
    remainders, earlier options first on a tie (Hamilton's largest-remainder method).
    So three equal options show 34, 33 and 33, never 33 + 33 + 33 = 99."""
    total = sum(counts)
    if total <= 0:
        return [0 for _ in counts]
    floors = [count * 100 // total for count in counts]
    remainders = [count * 100 % total for count in counts]
    left = 100 - sum(floors)
    by_remainder = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[:left]:
        floors[i] += 1
    return floors


def _count(raw: object) -> int:
    """A stored count; an unreadable one, or one below zero (a vote moved away from an
    option before the move to it landed), counts as none."""
    if not isinstance(raw, bytes | str | int):
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def _text(raw: object) -> str | None:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw if isinstance(raw, str) else None


class PollSource:
    name = "poll"
    depends_on = frozenset[str]()
    reach = Reach.GROUPED
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.block_id is None or not request.poll_options:
            return ()
        tally: RedisCommand = ("HMGET", poll_tally_key(request.block_id), *request.poll_options)
        if request.recipient is None:
            return (tally,)
        return (tally, ("HGET", poll_votes_key(request.recipient), request.block_id))

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        options = request.poll_options
        if not options:  # an open with no recipient data at all (unsigned), or no poll
            return Missing(hint="poll is missing: the tally is read on signed opens only")
        stored = replies[0] if replies and isinstance(replies[0], list) else []
        counts = [_count(stored[i]) if i < len(stored) else 0 for i in range(len(options))]
        shares = percentages(counts)
        value: dict[str, object] = {
            "total": sum(counts),
            "options": {
                option: {"count": count, "percent": share}
                for option, count, share in zip(options, counts, shares, strict=True)
            },
        }
        mine = _text(replies[1]) if len(replies) > 1 else None
        if mine in options:
            value["mine"] = mine
        return value


class PollVotes:
    """Records votes: one per recipient and block, the latest winning, counted once."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._swap = redis.register_script(_SWAP_VOTE)

    async def vote(self, block_id: str, recipient: str, option: str) -> None:
        previous = _text(
            await self._swap(keys=[poll_votes_key(recipient)], args=[block_id, option])
        )
        if previous == option:
            return  # the same vote again: nothing moves
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(poll_tally_key(block_id), option, 1)
            if previous is not None:
                pipe.hincrby(poll_tally_key(block_id), previous, -1)
            await pipe.execute()
