"""The OpenAPI document against the running app, case by generated case (schemathesis).

Every operation of `server/openapi.json` gets generated requests, valid (positive) and
invalid (negative: each breaks one thing the document says), and every answer goes
through all of schemathesis's checks: no 5xx, only documented statuses, content types
and headers, bodies that match their schemas, valid input accepted; and through a
stricter one of ours, `invalid_requests_refused`: whatever the document calls invalid
gets a 4xx. A disagreement means the server or the document is wrong. The number of
examples per operation keeps the run near a minute.

schemathesis calls ASGI and WSGI apps in process, not aiohttp ones, so the real app
serves on a loopback port from an event loop of its own in a background thread, on the
test session's real Redis. Before each case the store is put back to the same small
state (a block, a profile, an item, a store, under the ids the document gives as
examples), so no case depends on the ones before it and the operations that read or
preview something find it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import requests
import schemathesis
from schemathesis.checks import CheckContext, CheckFunction
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.generation.meta import (
    REQUEST_SHAPE_PROBES,
    CoveragePhaseData,
    CoverageScenario,
    FuzzingPhaseData,
)
from schemathesis.specs.openapi.checks import positive_data_acceptance
from support import AUTH, SECRET, TOKEN, LiveApp, data_keys

from server.api.openapi import DOCUMENT
from server.blocks.snapshot import BLOCKS_KEY, CHANGES_KEY, VERSIONS_KEY
from server.settings import Settings
from server.web.app import TEMPLATES_DIR

# The ids the document gives as its parameters' examples: the examples phase asks for
# these, so each operation is also tried on something that exists.
BLOCK = "cart-reminder"
SEED: tuple[tuple[str, str, Any], ...] = (
    ("PUT", "/api/v1/profiles/u1", {"first_name": "Ann", "tz": "Europe/Warsaw"}),
    ("PUT", "/api/v1/inventory/sku-1", {"stock": 3, "price": 19.99, "name": "Trail boots"}),
    (
        "PUT",
        "/api/v1/stores/london-soho",
        {"name": "Soho", "address": "1 Carnaby St, London", "lat": 51.5134, "lon": -0.1389},
    ),
)

# Slow, left out of `make test-fast`: it drives the app on a real port with thousands of generated
# requests.
pytestmark = pytest.mark.slow

# What the document states in words because JSON Schema cannot: a 422 naming only these
# (field, message) pairs answers a request the schema allows, as documented. Anything
# else a schema-valid request is refused for is a disagreement.
IN_WORDS_ONLY: dict[str, tuple[tuple[str, str], ...]] = {
    # A time zone must be one the IANA database names (too many to list in a schema).
    "*": (
        (r"(\[\d+\]\.|location\.)?tz", "must be an IANA time zone name"),
        # JSON may escape half a surrogate pair, which no Unicode string can hold.
        (r"body", r"not valid JSON \(str is not valid UTF-8: surrogates not allowed"),
    ),
    # Registration checks what only compiling and drawing the block can: the variants'
    # expressions, templates, links, layers, fonts and assets (and, in `renderers`, a
    # layer's whole numbers must be written without a fraction, which JSON Schema cannot
    # say), the data sources, the split's variant names, the area across width and
    # height, and whether the default fits its byte budget.
    "PUT /api/v1/blocks/{id}": (
        (r"(variants\[\d+\]|default|data)([.\[].*)?", ".*"),
        (r"split\.weights\..*", "not a variant of this block"),
        # `server.blocks.experiments` likewise wants a weight written without a fraction.
        (r"split\.weights\..*", "must be a whole number"),
        (r"height", "the block is too large"),
        (r"max_bytes", "the default cannot fit"),
        # A poll's results page must be a link browsers read as written, and variants
        # that read `poll` need one.
        (r"poll\.results", "must be an absolute http or https URL browsers read"),
        (r"poll", "required: the variants read poll"),
    ),
    # A Segment call's timestamp must read as ISO 8601, and its traits' `tz` be a zone.
    "POST /api/v1/segment": (
        (r"((batch)?\[\d+\]\.)?timestamp", "must be an ISO 8601 date-time"),
        (r"((batch)?\[\d+\]\.)?traits\.tz", "must be an IANA time zone name"),
    ),
    # Opening ranges must each open before they close, in order: the pattern gives only
    # their shape.
    "PUT /api/v1/stores/{id}": ((r"hours\.\w+", "must be "),),
    "GET /api/v1/blocks/{id}/stats": ((r"from", "must (not be after|be at most)"),),
    # Ids must be unique within a bulk body (the schema can only say that of whole items).
    "POST /api/v1/stores": (
        (r"\[\d+\]\.id", "duplicate: "),
        (r"\[\d+\]\.hours\.\w+", "must be "),
    ),
}

# No config file is read, and nothing is cached on disk: the run is the same anywhere.
# The token goes through the document's own security scheme, so that cases meant to
# go without it (or with a wrong one) do.
schema = schemathesis.openapi.from_path(
    DOCUMENT,
    config=SchemathesisConfig.from_dict(
        {"cache": {"enabled": False}, "auth": {"openapi": {"bearer": {"bearer": TOKEN}}}}
    ),
)


class Reset:
    """Puts the store back to the seeded state before each case."""

    def __init__(self, base_url: str, redis_url: str, session: requests.Session) -> None:
        self.base_url = base_url
        self.store = redis.Redis.from_url(redis_url)
        self.session = session
        self.block = json.loads((TEMPLATES_DIR / "blocks" / f"{BLOCK}.json").read_text())

    def __call__(self) -> None:
        # Blocks go through the API, which keeps the app's in-memory snapshot in step.
        listed = self._send("GET", "/api/v1/blocks").json()["blocks"]
        seeded = False
        for block in listed:
            if block["id"] == BLOCK and block["definition"] == self.block:
                seeded = True
            else:
                self._send("DELETE", f"/api/v1/blocks/{block['id']}")
        if not seeded:
            self._send("PUT", f"/api/v1/blocks/{BLOCK}", self.block)
        # The rest is read from the store at each request: emptied directly.
        keep = {key.encode() for key in (BLOCKS_KEY, VERSIONS_KEY, CHANGES_KEY)}
        doomed = [key for key in data_keys(self.store) if key not in keep]
        if doomed:
            self.store.delete(*doomed)
        for method, path, body in SEED:
            self._send(method, path, body)

    def _send(self, method: str, path: str, body: Any = None) -> requests.Response:
        response = self.session.request(
            method, self.base_url + path, json=body, headers=AUTH, timeout=30
        )
        assert response.status_code < 300, f"{method} {path}: {response.text[:500]}"
        return response

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def live(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, requests.Session, Reset]]:
    with redis.Redis.from_url(redis_server_url) as store:
        store.flushdb()
    settings = Settings(
        secrets=(SECRET,),
        api_tokens=(TOKEN,),
        data_dir=Path(tmp_path_factory.mktemp("schemathesis")),
        render_deadline_ms=10_000,
        segments_interval_s=0,
    )
    with LiveApp(settings, redis_server_url) as app, requests.Session() as session:
        reset = Reset(app.base_url, redis_server_url, session)
        yield app.base_url, session, reset
        reset.close()


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
def test_api_conforms_to_its_document(
    case: Case[Any], live: tuple[str, requests.Session, Reset]
) -> None:
    base_url, session, reset = live
    reset()
    response = case.call(base_url=base_url, session=session)
    excluded: list[CheckFunction] = (
        [positive_data_acceptance] if refused_as_documented(case, response) else []
    )
    case.validate_response(
        response,
        excluded_checks=excluded,
        additional_checks=[invalid_requests_refused],
        transport_kwargs={"session": session},
    )


def invalid_requests_refused(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """A request the document says is invalid gets a 4xx: never a 2xx, 3xx or 5xx.

    schemathesis's own check lets an API ignore a forbidden property and take statuses
    from a fixed list; this one holds the server to the document. Two kinds of invalid
    request are left to that check, as OpenAPI does not close them: query parameters
    or headers the document does not name (the server ignores them, as browsers and
    email clients add their own), and request-shape probes (a `Content-Type` the
    document does not list: bodies are read as JSON whatever their label, so that
    `curl -d` works; a bodiless request's label means nothing).
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return
    phase = meta.phase.data
    if isinstance(phase, CoveragePhaseData) and phase.scenario in REQUEST_SHAPE_PROBES:
        return
    if adds_only_unnamed_parameters(phase):
        return
    assert 400 <= response.status_code < 500, (
        f"{case.operation.label}: an invalid request "
        f"({getattr(phase, 'description', None) or 'generated'}) got {response.status_code}"
    )


NOT_IN_BODY_OR_PATH = {ParameterLocation.QUERY, ParameterLocation.HEADER, ParameterLocation.COOKIE}


def adds_only_unnamed_parameters(phase: object) -> bool:
    """Whether the request is invalid only for query parameters, headers or cookies the
    document does not name."""
    if isinstance(phase, CoveragePhaseData):
        return (
            phase.scenario is CoverageScenario.OBJECT_UNEXPECTED_PROPERTIES
            and phase.parameter_location in NOT_IN_BODY_OR_PATH
        )
    if isinstance(phase, FuzzingPhaseData):
        targeted = {phase.parameter_location, *(m.parameter_location for m in phase.mutations)}
        return targeted <= NOT_IN_BODY_OR_PATH and "additionalProperties" in (
            phase.description or ""
        )
    return False


def refused_as_documented(case: Case[Any], response: Response) -> bool:
    """Whether a 422 names only constraints the document states in words."""
    if response.status_code != 422:
        return False
    allowed = [*IN_WORDS_ONLY["*"], *IN_WORDS_ONLY.get(case.operation.label, ())]
    details = response.json()["error"]["details"]
    return bool(details) and all(
        any(
            re.fullmatch(field, detail["field"], re.DOTALL)
            and re.match(message, detail["message"], re.DOTALL)
            for field, message in allowed
        )
        for detail in details
    )
