"""The audit log: each API write, with its token's name, in the log and in the store."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from sample_blocks import greeting
from support import SCOPED_TOKENS, TOKEN, bearer, refused_fields

from server.api.audit import AUDIT_KEY
from server.api_tokens import LEGACY_TOKEN_NAME
from server.datastore.embedded_redis import EmbeddedRedis
from server.settings import Settings

Client = TestClient[Any, Any]


@pytest.fixture
def client(scoped_client: Client) -> Client:
    """The app serving the named tokens of `support.SCOPED_TOKENS` as well."""
    return scoped_client


async def audit_page(client: Client, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/v1/audit{query}", headers=bearer("ops"))
    assert response.status == 200, await response.text()
    page: dict[str, Any] = await response.json()
    return page


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        dict(record.fields)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "atopen.audit" and record.getMessage() == "api write"
    ]


async def test_writes_are_kept_with_the_tokens_name(client: Client) -> None:
    put = await client.put("/api/v1/blocks/hero", json=greeting(), headers=bearer("ops"))
    assert put.status == 201
    patch = await client.patch(
        "/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=bearer("crm")
    )
    assert patch.status == 200
    events = await client.post(
        "/api/v1/events", json={"recipient": "u1", "type": "view"}, headers=bearer("crm")
    )
    assert events.status == 202
    gone = await client.delete("/api/v1/blocks/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    assert gone.status == 404

    entries = (await audit_page(client))["entries"]
    seen = [(e["token"], e["method"], e["route"], e["id"], e["status"]) for e in entries]
    assert seen == [
        ("ops", "PUT", "/api/v1/blocks/{id}", "hero", 201),
        ("crm", "PATCH", "/api/v1/profiles/{rid}", "u1", 200),
        ("crm", "POST", "/api/v1/events", None, 202),
        (LEGACY_TOKEN_NAME, "DELETE", "/api/v1/blocks/{id}", "nope", 404),
    ]
    assert entries[0]["request_id"] == put.headers["X-Request-Id"]
    assert all(e["ts"].endswith("+00:00") for e in entries)


async def test_refused_and_failed_writes_are_kept_too(client: Client) -> None:
    refused = await client.put("/api/v1/blocks/hero", json=greeting(), headers=bearer("crm"))
    assert refused.status == 403
    bad = await client.put("/api/v1/profiles/u1", json=[1], headers=bearer("crm"))
    assert bad.status == 422
    entries = (await audit_page(client))["entries"]
    assert [(e["token"], e["route"], e["status"]) for e in entries] == [
        ("crm", "/api/v1/blocks/{id}", 403),
        ("crm", "/api/v1/profiles/{rid}", 422),
    ]


async def test_reads_are_not_audited(client: Client, store: redis.Redis) -> None:
    for path in ("/api/v1/blocks", "/api/v1/profiles/u1", "/api/v1/me"):
        await client.get(path, headers=bearer("ops"))
    assert (await audit_page(client))["entries"] == []
    assert store.exists(AUDIT_KEY) == 0


async def test_requests_without_a_valid_token_are_logged_not_kept(
    client: Client, store: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="atopen.audit")
    for headers in ({}, {"Authorization": "Bearer wrong-token-value"}):
        response = await client.put("/api/v1/blocks/hero", json=greeting(), headers=headers)
        assert response.status == 401
    assert store.exists(AUDIT_KEY) == 0
    lines = audit_lines(caplog)
    assert [(line["token"], line["status"]) for line in lines] == [(None, 401), (None, 401)]


async def test_tokens_appear_nowhere(
    client: Client, store: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in SCOPED_TOKENS:
        await client.put("/api/v1/profiles/u1", json={"a": 1}, headers=bearer(name))
        await client.get("/api/v1/me", headers=bearer(name))
    await client.delete("/api/v1/profiles/u1", headers={"Authorization": f"Bearer {TOKEN}"})
    stream: Any = store.xrange(AUDIT_KEY)
    kept = b"".join(fields[b"entry"] for _, fields in stream)
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert len(stream) == len(SCOPED_TOKENS) + 1
    for secret in (*(secret for secret, _ in SCOPED_TOKENS.values()), TOKEN):
        assert secret.encode() not in kept
        assert secret not in logged


async def test_audit_lines_are_written_when_other_logs_are_quiet(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)  # the root level, as ATOPEN_LOG_LEVEL=WARNING sets it
    caplog.handler.setLevel(logging.NOTSET)  # and a handler that takes what reaches it
    await client.put("/api/v1/profiles/u1", json={"a": 1}, headers=bearer("crm"))
    assert [line["token"] for line in audit_lines(caplog)] == ["crm"]
    line = next(r for r in caplog.records if r.name == "atopen.audit")
    assert orjson.loads(orjson.dumps(line.fields))["route"] == "/api/v1/profiles/{rid}"  # type: ignore[attr-defined]


async def test_only_the_admin_scope_reads_the_audit(client: Client) -> None:
    for name in ("crm", "reader"):
        response = await client.get("/api/v1/audit", headers=bearer(name))
        assert response.status == 403
        assert "admin" in (await response.json())["error"]["message"]
    legacy = await client.get("/api/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"})
    assert legacy.status == 200


async def test_pages_follow_the_cursor(client: Client) -> None:
    for n in range(5):
        await client.put(f"/api/v1/profiles/u{n}", json={"n": n}, headers=bearer("crm"))
    first = await audit_page(client, "?limit=2")
    assert [e["id"] for e in first["entries"]] == ["u0", "u1"]
    assert first["after"] == first["entries"][-1]["cursor"]
    second = await audit_page(client, f"?limit=2&after={first['after']}")
    assert [e["id"] for e in second["entries"]] == ["u2", "u3"]
    rest = await audit_page(client, f"?after={second['after']}")
    assert [e["id"] for e in rest["entries"]] == ["u4"]
    caught_up = await audit_page(client, f"?after={rest['after']}")
    assert caught_up == {"entries": [], "after": rest["after"]}
    # Cursors past any id the store can make: nothing, not an error.
    beyond = f"{2**64 - 1}-{2**64 - 1}"
    assert (await audit_page(client, f"?after={beyond}"))["entries"] == []
    assert (await audit_page(client, "?after=99999999999999999999"))["entries"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?after=yesterday", "after"),
        ("?after=1-2-3", "after"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=", "limit"),
    ],
)
async def test_bad_paging_is_422_naming_the_field(client: Client, query: str, field: str) -> None:
    response = await client.get(f"/api/v1/audit{query}", headers=bearer("ops"))
    assert await refused_fields(response) == [field]


async def test_the_stream_is_capped_by_count(make_client: Any, scoped_settings: Settings) -> None:
    client = await make_client(dataclasses.replace(scoped_settings, audit_max_entries=100))
    for n in range(130):
        await client.put(f"/api/v1/profiles/u{n}", json={"n": n}, headers=bearer("crm"))
    entries = (await audit_page(client, "?limit=1000"))["entries"]
    assert len(entries) == 100
    assert entries[0]["id"] == "u30"
    assert entries[-1]["id"] == "u129"


async def test_entries_older_than_the_retention_go(
    client: Client, store: redis.Redis, scoped_settings: Settings
) -> None:
    day_ms = 86_400_000
    now_ms = int(time.time() * 1000)
    retention_ms = scoped_settings.audit_retention_days * day_ms
    old = {"token": "crm", "route": "/api/v1/events", "status": 202}
    store.xadd(AUDIT_KEY, {"entry": orjson.dumps(old)}, id=f"{now_ms - retention_ms - day_ms}-0")
    recent = {**old, "status": 200}
    store.xadd(AUDIT_KEY, {"entry": orjson.dumps(recent)}, id=f"{now_ms - retention_ms + day_ms}-0")
    await client.put("/api/v1/profiles/u1", json={}, headers=bearer("crm"))
    statuses = [e["status"] for e in (await audit_page(client))["entries"]]
    assert statuses == [200, 200]


@pytest.mark.slow
async def test_with_the_store_gone_the_entry_is_still_logged(
    make_client: Any,
    scoped_settings: Settings,
    own_store: EmbeddedRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="atopen.audit")
    client = await make_client(scoped_settings, store_url=own_store.url)
    own_store.stop()
    response = await client.put("/api/v1/profiles/u1", json={"a": 1}, headers=bearer("crm"))
    assert response.status == 503  # the request's own answer, unchanged by the audit
    assert [(line["token"], line["status"]) for line in audit_lines(caplog)] == [("crm", 503)]
    warning = next(r for r in caplog.records if r.getMessage().startswith("audit entry not"))
    assert warning.levelno == logging.WARNING
    assert warning.fields["route"] == "/api/v1/profiles/{rid}"  # type: ignore[attr-defined]
