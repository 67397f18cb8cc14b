"""The date-times the API takes: ISO 8601 strings, a missing offset meaning UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from server.api.errors import invalid


def utc_instant(value: object, field: str, missing: datetime) -> datetime:
    """`value` as a UTC date-time, or `missing` when the field was left out."""
    if value is None:
        return missing
    if not isinstance(value, str):
        raise invalid(field, "must be an ISO 8601 date-time string")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, "must be an ISO 8601 date-time, e.g. 2026-05-01T12:00:00Z") from None
    # A time without an offset is taken as UTC (documented).
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
