"""`POST /api/v1/segment`: the Segment Spec's `identify`, `track` and `batch` calls, as a
customer-data platform (Segment, RudderStack, ...) sends them to a destination, feed the
profiles and events rules read.

- `identify`: its `traits` are merged into the profile of `userId` (JSON merge patch:
  a `null` trait deletes the field). The Spec's reserved traits written in camelCase are
  stored under atopen's snake_case names (`firstName` -> `first_name`); an `address`
  also gives the profile's location fields (`city`, `postal`, `country`); contact details
  (`email`, `phone`) are not kept: rules never need them, and atopen holds only opaque ids.
- `track`: an event of `userId`, its type the event name in lower case with other
  characters as `_` (`Song Played` -> `song_played`; `Order Completed` is a `purchase`,
  its `revenue` or `total` the `amount` segments add up), its props the `properties`, its
  idempotency key the `messageId`.
- `batch`: `{"batch": [call, ...]}` or a JSON array of calls (what a batching webhook
  destination posts).

A call with only an `anonymousId`, and the calls atopen has no use for (`page`,
`screen`, `group`, `alias`), are accepted and skipped: a recipient is who an email
service knows by an id. Every call is validated before anything is written; one bad
call refuses them all (422, naming it, e.g. `batch[2].userId`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web

from content_sources.clock import zone
from content_sources.documents import without_nulls
from content_sources.events import Event
from content_sources.segments import PURCHASE, record_purchases
from server.api.app_state import EVENTS, PROFILES, REDIS, RFM_POLICY
from server.api.errors import ApiError, invalid, invalid_fields, json_response, read_json
from server.api.events_routes import parse_event
from server.api.ids import recipient_id

routes = web.RouteTableDef()

# The most calls Segment's own batch endpoint takes in one request.
MAX_CALLS = 2500
# An event id's length, as the events API takes it.
MAX_MESSAGE_ID_LEN = 128
USED_TYPES = frozenset({"identify", "track"})
SKIPPED_TYPES = frozenset({"page", "screen", "group", "alias"})
# Reserved traits (Segment Spec: Identify, "Traits") whose camelCase spelling is stored
# under the snake_case name rules use.
_SNAKE_TRAITS = {"firstName": "first_name", "lastName": "last_name", "createdAt": "created_at"}
_CONTACT_TRAITS = frozenset({"email", "phone"})
# Segment's semantic event for a purchase (Spec: Ecommerce Events, "Order Completed"),
# as its name reads once made a type.
_ORDER_COMPLETED = "order_completed"
_NOT_IN_TYPE = re.compile(r"[^A-Za-z0-9_.:-]+")
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9]")
# The Spec's fields atopen reads, and what each must be when given (`null` counts as not
# given: the Spec's libraries send `"userId": null` for an anonymous call).
_FIELD_TYPES: dict[str, tuple[type, str]] = {
    "userId": (str, "a string"),
    "anonymousId": (str, "a string"),
    "event": (str, "a string"),
    "messageId": (str, "a string"),
    "timestamp": (str, "an ISO 8601 date-time string"),
    "traits": (dict, "an object"),
    "properties": (dict, "an object"),
    "context": (dict, "an object"),
}
_COUNTRY_CODE = re.compile(r"^[A-Za-z]{2}$")
# `2015-2-02T...`: a date with one-digit month or day, as in Segment's own batch example.
_SHORT_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?=T|$)")


@dataclass(slots=True)
class Calls:
    """What one request asks for, validated: profile patches in order, events, and the
    calls that change nothing; each with its place in the request."""

    count: int = 0
    identified: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[int, str, Event]] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)

    def skip(self, index: int, reason: str) -> None:
        self.skipped.append({"index": index, "reason": reason})


@routes.post("/api/v1/segment")
async def segment_calls(request: web.Request) -> web.Response:
    body: Any = await read_json(request)
    now = datetime.now(UTC)
    calls = _parse(body, now)
    profiles = request.app[PROFILES]
    for recipient, patch in calls.identified:
        await profiles.patch(recipient, patch)
    events = [(recipient, event) for _, recipient, event in calls.events]
    outcomes = await request.app[EVENTS].store(events, now)
    await record_purchases(request.app[REDIS], events, now, request.app[RFM_POLICY])
    for (index, _, _), why_not in zip(calls.events, outcomes, strict=True):
        if why_not is not None:
            calls.skip(index, why_not)
    return json_response(
        {
            "received": calls.count,
            "identified": len(calls.identified),
            "stored": outcomes.count(None),
            "skipped": sorted(calls.skipped, key=lambda skipped: cast(int, skipped["index"])),
        }
    )


def _parse(body: Any, now: datetime) -> Calls:
    if isinstance(body, list):
        items, prefix = body, ""
    elif isinstance(body, dict) and "batch" in body:
        items, prefix = body["batch"], "batch"
        if not isinstance(items, list):
            raise invalid("batch", "must be an array of calls")
    elif isinstance(body, dict):
        items, prefix = [body], None
    else:
        raise invalid("body", "must be a Segment call, a batch object or an array of calls")
    if not 1 <= len(items) <= MAX_CALLS:
        raise invalid(prefix or "body", f"a batch holds 1 to {MAX_CALLS} calls")
    calls = Calls(count=len(items))
    problems: list[dict[str, str]] = []
    for i, item in enumerate(items):
        where = "" if prefix is None else f"{prefix}[{i}]"
        try:
            _parse_call(item, i, where, now, calls)
        except ApiError as exc:
            problems.extend(exc.details)
    if problems:
        raise invalid_fields(problems)
    return calls


def _parse_call(call: object, index: int, where: str, now: datetime, calls: Calls) -> None:
    def at(name: str) -> str:
        return f"{where}.{name}" if where else name

    if not isinstance(call, dict) or "batch" in call:
        raise invalid(where or "body", "must be a call object (a batch holds no batch)")
    kind = call.get("type")
    if not isinstance(kind, str) or kind not in USED_TYPES | SKIPPED_TYPES:
        raise invalid(at("type"), "required: identify, track, page, screen, group or alias")
    for name, (kind_of_value, described) in _FIELD_TYPES.items():
        value = call.get(name)
        if value is not None and not isinstance(value, kind_of_value):
            raise invalid(at(name), f"must be {described}")
    message_id = call.get("messageId")
    if message_id is not None and not 0 < len(message_id) <= MAX_MESSAGE_ID_LEN:
        raise invalid(at("messageId"), f"must be 1 to {MAX_MESSAGE_ID_LEN} characters")
    user_id = call.get("userId")
    if user_id is None and call.get("anonymousId") is None:
        raise invalid(at("userId"), "required: every call has a userId or an anonymousId")
    recipient = None if user_id is None else recipient_id(user_id, at("userId"))
    event_type = _event_type(call.get("event"), at) if kind == "track" else ""
    if kind in SKIPPED_TYPES:
        calls.skip(index, f"{kind} calls are not used")
        return
    if recipient is None:
        calls.skip(index, "no userId: anonymous activity is not kept")
        return
    if kind == "identify":
        calls.identified.append((recipient, _profile_patch(call, at)))
        return
    calls.events.append((index, recipient, _event(call, recipient, event_type, at, now)))


def _event_type(name: object, at: Callable[[str], str]) -> str:
    """The event type of a track call's `event`: `Song Played` is `song_played`."""
    if not isinstance(name, str) or not _ALPHANUMERIC.search(name):
        raise invalid(at("event"), "required: the event's name, with a letter or digit")
    event_type = _NOT_IN_TYPE.sub("_", name).lower().strip("_.:-")[:64]
    return PURCHASE if event_type == _ORDER_COMPLETED else event_type


def _profile_patch(call: Mapping[str, Any], at: Callable[[str], str]) -> dict[str, Any]:
    traits = call.get("traits") or {}
    patch: dict[str, Any] = {
        _SNAKE_TRAITS.get(str(name), str(name)): value
        for name, value in traits.items()
        if name not in _CONTACT_TRAITS
    }
    address = traits.get("address")
    if isinstance(address, dict):
        place = {
            "city": address.get("city"),
            "postal": address.get("postalCode", address.get("postal_code")),
            "country": address.get("country"),
        }
        for name, value in place.items():
            if name == "country" and not (isinstance(value, str) and _COUNTRY_CODE.match(value)):
                continue  # geo reads only ISO codes (`US`, not `USA`)
            if isinstance(value, str) and value.strip() and name not in patch:
                patch[name] = value.upper() if name == "country" else value
    tz = patch.get("tz")
    if tz is not None and (not isinstance(tz, str) or zone(tz) is None):
        raise invalid(at("traits.tz"), "must be an IANA time zone name, e.g. Europe/Warsaw")
    # The reader's zone as the device reported it, unless the traits say otherwise.
    context = call.get("context")
    device_zone = context.get("timezone") if isinstance(context, dict) else None
    if "tz" not in patch and isinstance(device_zone, str) and zone(device_zone) is not None:
        patch["tz"] = device_zone
    return patch


def _event(
    call: Mapping[str, Any],
    recipient: str,
    event_type: str,
    at: Callable[[str], str],
    now: datetime,
) -> Event:
    props = without_nulls(call.get("properties") or {})
    amount = props.get("revenue", props.get("total"))
    if event_type == PURCHASE and "amount" not in props and amount is not None:
        props = {**props, "amount": amount}
    raw: dict[str, object] = {"recipient": recipient, "type": event_type, "props": props}
    if call.get("messageId") is not None:
        raw["id"] = call["messageId"]
    timestamp = call.get("timestamp")
    if timestamp is not None:
        raw["ts"] = _SHORT_DATE.sub(
            lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", timestamp.strip()
        )
    try:
        return parse_event(raw, "", now)[1]
    except ApiError as exc:  # the events API's names for the fields, in the Spec's
        spec_names = {"id": "messageId", "ts": "timestamp"}
        detail = exc.details[0]
        raise invalid(
            at(spec_names.get(detail["field"], detail["field"])), detail["message"]
        ) from None
