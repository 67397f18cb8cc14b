"""The shape of the ids marketers choose: recipients and SKUs."""

from __future__ import annotations

from server.api.errors import invalid

MAX_ID_LEN = 256


def recipient_id(value: object, field: str = "recipient") -> str:
    """An opaque recipient id (an ESP's subscriber key); never an email address."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LEN:
        raise invalid(field, f"required: a non-empty string of at most {MAX_ID_LEN} characters")
    if "@" in value:
        raise invalid(field, "must be an opaque id, never an email address")
    return value


def sku(value: object, field: str = "sku") -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_ID_LEN
        or any(c.isspace() for c in value)
    ):
        raise invalid(field, f"required: a string of at most {MAX_ID_LEN} characters, no spaces")
    return value
