"""Polls: a block's `poll` field, and the votes its click URLs carry.

`"poll": {"options": ["KEY", ...], "results": "https://..."}`. A signed click URL with
`vote=KEY` records that recipient's vote (content_sources/poll.py keeps one per recipient
and block, the latest winning) and goes to `results`, else where any click of the block
goes. An unsigned vote, one without a recipient, or one for an option the block does not
have records nothing and goes to the default's link.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from content_sources.poll import PollVotes

if TYPE_CHECKING:
    from server.blocks.snapshot import PreparedBlock

log = logging.getLogger("atopen.polls")

MIN_OPTIONS = 2
MAX_OPTIONS = 20
# Option keys are written into URLs (`vote=KEY`) and rules (`poll.options.KEY.count`).
_OPTION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_POLL_KEYS = frozenset({"options", "results"})
VOTE_PARAM = "vote"


@dataclass(frozen=True, slots=True)
class Poll:
    options: tuple[str, ...]
    results: str | None = None


def parse_poll(raw: object) -> tuple[Poll | None, list[tuple[str, str]]]:
    """The block's poll, and (field, message) for every problem with it."""
    from server.blocks.compiling import is_http_url  # blocks builds on this module
    from server.blocks.selection import click_target

    if not isinstance(raw, dict):
        return None, [("poll", 'must be an object: {"options": [...], "results": URL}')]
    problems = [(f"poll.{key}", "unknown field") for key in sorted(set(raw) - _POLL_KEYS)]
    options = raw.get("options")
    if not isinstance(options, list) or not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        problems.append(
            ("poll.options", f"required: a list of {MIN_OPTIONS} to {MAX_OPTIONS} option keys")
        )
        options = []
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not isinstance(option, str) or not _OPTION_KEY.match(option):
            problems.append(
                (
                    f"poll.options[{i}]",
                    "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit",
                )
            )
        elif option in seen:
            problems.append((f"poll.options[{i}]", f"duplicate option {option!r}"))
        else:
            seen.add(option)
    results = raw.get("results")
    if results is not None and (
        not isinstance(results, str)
        or not is_http_url(results)
        or click_target(results.strip()) is None
    ):
        problems.append(
            (
                "poll.results",
                "must be an absolute http or https URL browsers read as written "
                "(no user name, backslash or control character)",
            )
        )
    if problems:
        return None, problems
    return Poll(tuple(options), results.strip() if isinstance(results, str) else None), []


def vote_in(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The vote a click URL carries (its first `vote=`), if any."""
    return next((value for key, value in pairs if key == VOTE_PARAM), None)


async def vote_target(
    redis: Redis, prepared: PreparedBlock, recipient: str | None, vote: str
) -> str | None:
    """Record a vote click's vote, and say where the click goes: the poll's results page;
    None for where any click of the block goes (a poll without a results page); the
    default's link when the vote is not one to record (no valid signature, hence no
    recipient; no poll; not one of its options) or the store failed to record it."""
    from server.blocks.selection import safe_link  # selection builds on blocks, which uses this

    block = prepared.block
    poll = block.poll
    if recipient is None or poll is None or vote not in poll.options:
        return prepared.default_link
    try:
        await PollVotes(redis).vote(block.id, recipient, vote)
    except Exception as exc:  # a click is always answered: log, and count nothing
        log.warning("vote on %s not recorded: %r", block.id, exc)
        return prepared.default_link
    if poll.results is None:
        return None
    return safe_link(block, poll.results) or prepared.default_link
