"""Redis key names for recipient data and inventory, in one place.

Every key a recipient owns carries the recipient id as a hash tag (`{rid}`), so all of
them live in one Redis Cluster slot and one open can read them in one round trip.
"""

from collections.abc import Iterable

PREFIX = "atopen:"


def profile_key(recipient: str) -> str:
    return f"{PREFIX}profile:{{{recipient}}}"


def events_key(recipient: str) -> str:
    return f"{PREFIX}events:{{{recipient}}}"


def event_ids_key(recipient: str) -> str:
    return f"{PREFIX}event-ids:{{{recipient}}}"


_REMEMBERED = f"{PREFIX}remembered:{{"
_ENGAGEMENT = f"{PREFIX}engagement:{{"


def remembered_key(recipient: str) -> str:
    return f"{_REMEMBERED}{recipient}}}"


def remembered_keys(recipients: Iterable[str]) -> list[str]:
    """`remembered_key` of each of `recipients`, made in one call for a flush's thousands."""
    return [f"{_REMEMBERED}{recipient}}}" for recipient in recipients]


def purchases_key(recipient: str) -> str:
    """The recipient's purchases (for segments): a hash of event id -> `[ts_ms, amount]`."""
    return f"{PREFIX}purchases:{{{recipient}}}"


def rfm_key(recipient: str) -> str:
    """The recipient's computed RFM record (JSON), what `rfm` reads."""
    return f"{PREFIX}rfm:{{{recipient}}}"


def last_seen_key(recipient: str) -> str:
    """Where a real (not proxied) open last placed the recipient."""
    return f"{PREFIX}last-seen:{{{recipient}}}"


def engagement_key(recipient: str) -> str:
    """The recipient's human opens and clicks (for `engagement`): a sorted set by time."""
    return f"{_ENGAGEMENT}{recipient}}}"


def engagement_keys(recipients: Iterable[str]) -> list[str]:
    """`engagement_key` of each of `recipients`, made in one call for a flush's thousands."""
    return [f"{_ENGAGEMENT}{recipient}}}" for recipient in recipients]


def last_click_key(recipient: str) -> str:
    """When the recipient last clicked (any click): how a burst of clicks is told apart."""
    return f"{PREFIX}last-click:{{{recipient}}}"


def poll_votes_key(recipient: str) -> str:
    """The recipient's poll votes: a hash of block id -> `BALLOT:OPTION`, the option they
    chose in that tally's ballot (content_sources/poll.py)."""
    return f"{PREFIX}poll-votes:{{{recipient}}}"


def poll_tally_key(block_id: str) -> str:
    """A poll's tally, shared by every recipient: a hash of option -> votes."""
    return f"{PREFIX}poll-tally:{{{block_id}}}"


def inventory_key(sku: str) -> str:
    return f"{PREFIX}inventory:{sku}"


def recipient_keys(recipient: str) -> tuple[str, ...]:
    """Everything stored about one recipient: what erasing a profile deletes."""
    return (
        profile_key(recipient),
        events_key(recipient),
        event_ids_key(recipient),
        remembered_key(recipient),
        purchases_key(recipient),
        rfm_key(recipient),
        last_seen_key(recipient),
        poll_votes_key(recipient),
        engagement_key(recipient),
        last_click_key(recipient),
    )
