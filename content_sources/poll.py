"""`poll`: a block's live tally and the recipient's own vote, and how votes are stored.

Rules and templates see `poll.total`, `poll.options.KEY.count`, `poll.options.KEY.percent`
and `poll.mine` (the recipient's vote; missing when they have not voted). The tally is
one hash per block (option -> count), shared by every open; a recipient's votes are one
hash per recipient (block -> ballot and option), erased with the rest of their data.
Both are read in the open's one round trip.

A vote is kept once per recipient and block, the latest winning. It is recorded in three
atomic steps: a script on the tally answers its ballot, a script swaps the recipient's
vote and answers the one it replaced, then a script on the tally moves the count from
that option to the new one. Each change of a vote is handed to exactly one writer, so
however many clicks arrive at once, a recipient counts once. (Two keys in one script
would not do: on Redis Cluster the tally and the recipient's keys live in different
slots.)

A tally holds its ballot: a random name made with its first vote, and written into each
vote counted in it (`BALLOT:OPTION`). Deleting the block deletes its tally, and with it
the ballot; a block made again under the same id starts a new ballot, so the votes
recipients cast before are neither shown as `poll.mine` nor taken off its new tally when
they vote again. The votes hashes are never scanned for the deleted block's fields:
each expires `POLL_TTL_S` after the recipient's last vote, and a tally after its last
vote too, so nothing a poll leaves lasts without bound.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from content_sources.expressions import Missing
from content_sources.redis_keys import poll_tally_key, poll_votes_key
from content_sources.source import OpenRequest, Reach, RedisCommand

# As long as a block's report counters are kept (400 days), renewed at each vote: a
# recipient who has not voted for that long, or a poll nobody voted on, is forgotten.
POLL_TTL_S = 400 * 86_400
# The tally's field that names its ballot. Option keys start with a letter or a digit
# (server/blocks/polls.py), so no option can take it.
BALLOT_FIELD = "~ballot"
_BALLOT_SEPARATOR = ":"

# KEYS: the tally. ARGV: ballot field, a new ballot, TTL seconds. Answers the tally's
# ballot, ARGV[2] when it had none (a new tally, which expires unless votes land in it).
_BALLOT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return ARGV[2]
end
return redis.call('HGET', KEYS[1], ARGV[1])
"""
# KEYS: the recipient's votes. ARGV: block id, ballot and option, TTL seconds. Answers
# the vote replaced (nil for a first vote); the vote is set either way.
_SWAP_VOTE = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return previous
"""
# KEYS: the tally. ARGV: ballot field, ballot, TTL seconds, the new option, then the
# option it replaces if any. Counts nothing when the tally's ballot is another (its
# block was deleted meanwhile): the vote belongs to a tally that is gone.
_MOVE_VOTE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
if ARGV[5] then
  redis.call('HINCRBY', KEYS[1], ARGV[5], -1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
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


def _ballot_vote(raw: object, ballot: str | None) -> str | None:
    """The option of a stored vote (`BALLOT:OPTION`) when it was cast in `ballot`."""
    text = _text(raw)
    if text is None or ballot is None:
        return None
    cast_in, _, option = text.partition(_BALLOT_SEPARATOR)
    return option if cast_in == ballot and option else None


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
        tally: RedisCommand = (
            "HMGET",
            poll_tally_key(request.block_id),
            BALLOT_FIELD,
            *request.poll_options,
        )
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
        ballot = _text(stored[0]) if stored else None
        counts = [_count(stored[i + 1]) if i + 1 < len(stored) else 0 for i in range(len(options))]
        shares = percentages(counts)
        value: dict[str, object] = {
            "total": sum(counts),
            "options": {
                option: {"count": count, "percent": share}
                for option, count, share in zip(options, counts, shares, strict=True)
            },
        }
        mine = _ballot_vote(replies[1], ballot) if len(replies) > 1 else None
        if mine in options:
            value["mine"] = mine
        return value


class PollVotes:
    """Records votes: one per recipient and block, the latest winning, counted once."""

    def __init__(self, redis: Redis) -> None:
        self._ballot = redis.register_script(_BALLOT)
        self._swap = redis.register_script(_SWAP_VOTE)
        self._move = redis.register_script(_MOVE_VOTE)

    async def vote(self, block_id: str, recipient: str, option: str) -> None:
        tally = poll_tally_key(block_id)
        ballot = _text(
            await self._ballot(keys=[tally], args=[BALLOT_FIELD, secrets.token_hex(8), POLL_TTL_S])
        )
        if ballot is None:  # not a reply the script gives: record nothing rather than guess
            raise ValueError(f"no ballot for the tally of {block_id}")
        previous = _ballot_vote(
            await self._swap(
                keys=[poll_votes_key(recipient)],
                args=[block_id, f"{ballot}{_BALLOT_SEPARATOR}{option}", POLL_TTL_S],
            ),
            ballot,
        )
        if previous == option:
            return  # the same vote again: nothing moves
        moved = [option] if previous is None else [option, previous]
        await self._move(keys=[tally], args=[BALLOT_FIELD, ballot, POLL_TTL_S, *moved])


async def delete_tally(redis: Redis, block_id: str) -> None:
    """Delete a block's tally, and with it its ballot: the votes cast in it stay in the
    recipients' hashes until those expire, but no tally counts or shows them again."""
    await redis.delete(poll_tally_key(block_id))
