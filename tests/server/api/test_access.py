"""Named API tokens with scopes: the setting, the scope of every route, 403s, `/me`, `/metrics`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from support import SCOPED_TOKENS, TOKEN, bearer, data_keys, run_command

from server.api.access import RULES, needed_scope, rule_for
from server.api.openapi import DOCUMENT
from server.api_tokens import LEGACY_TOKEN_NAME, Scope
from server.settings import Settings, SettingsError, load_settings
from server.web.app import create_app
from server.web.request_handling import PUBLIC_API_PATHS

Client = TestClient[Any, Any]
API = "/api/v1/"
SAMPLE_IDS = {"id": "hero", "rid": "u1", "sku": "sku-1", "path": "no-such-thing"}


def api_routes() -> list[tuple[str, str]]:
    """Every (method, path template) the real app serves under /api/v1/, the catch-all's
    `*` spelled out as each method a client may send."""
    app = create_app(Settings(secrets=("k",), api_tokens=("t",)), redis_url="redis://127.0.0.1:1/0")
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or not resource.canonical.startswith(API):
            continue
        methods = (
            ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE")
            if route.method == "*"
            else (route.method,)
        )
        found.update((method, resource.canonical) for method in methods)
    return sorted(found)


API_ROUTES = api_routes()


# ------------------------------------------------------------------ the setting


def test_scoped_tokens_are_read_with_names_and_scopes() -> None:
    settings = load_settings(
        {"ATOPEN_API_TOKENS": "crm:abc:data, ci:x:y:z:blocks+read", "ATOPEN_API_TOKEN": "old"}
    )
    by_name = {t.name: t for t in settings.api_access}
    assert by_name["crm"].token == "abc"
    assert by_name["crm"].scopes == {Scope.DATA}
    # The token may hold colons: the name ends at the first, the scopes start after the last.
    assert by_name["ci"].token == "x:y:z"
    assert by_name["ci"].scopes == {Scope.BLOCKS, Scope.READ}
    assert by_name[LEGACY_TOKEN_NAME].token == "old"
    assert by_name[LEGACY_TOKEN_NAME].scopes == {Scope.ADMIN}
    assert "abc" not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("crm:secret-1:write", "unknown scope 'write'"),
        ("crm:secret-1", "expected NAME:TOKEN:SCOPES"),
        ("crm::data", "expected NAME:TOKEN:SCOPES"),
        (":secret-1:data", "expected NAME:TOKEN:SCOPES"),
        ("crm:secret-1:", "expected NAME:TOKEN:SCOPES"),
        ("crm:secret-1:data+", "unknown scope ''"),
        ("c r m:secret-1:data", "the name 'c r m'"),
        ("crm:secret 1:data", "space or a control character"),
        ("crm:secret-1:data,crm:secret-2:read", "crm twice"),
        ("crm:secret-1:data,ci:secret-1:read", "the same token"),
        ("crm:secret-1:data,,ci:secret-2:read", "entry 2"),
    ],
)
def test_a_bad_entry_is_named_without_its_token(raw: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"ATOPEN_API_TOKENS": raw})
    message = str(caught.value)
    assert message.startswith("ATOPEN_API_TOKENS: ")
    assert says in message
    assert "secret-1" not in message
    assert "secret-2" not in message


def test_a_token_in_both_settings_is_refused() -> None:
    with pytest.raises(SettingsError, match="ATOPEN_API_TOKEN too") as caught:
        load_settings(
            {"ATOPEN_API_TOKEN": "same-secret", "ATOPEN_API_TOKENS": "crm:same-secret:data"}
        )
    assert "same-secret" not in str(caught.value)


@pytest.mark.slow
def test_serve_stops_on_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOPEN_")}
    env.update(
        ATOPEN_DATA_DIR=str(tmp_path),
        ATOPEN_SECRET="k",
        ATOPEN_API_TOKENS="crm:hidden-token:dta",
    )
    result = run_command([sys.executable, "-m", "server", "serve"], env=env, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ATOPEN_API_TOKENS" in lines[0]
    assert "'dta'" in lines[0]
    assert "hidden-token" not in result.stderr + result.stdout


# ------------------------------------------------------------------ the rule table


def test_route_enumeration_found_the_api() -> None:
    # If enumerating broke, the test below would check nothing.
    assert ("PUT", "/api/v1/blocks/{id}") in API_ROUTES
    assert ("GET", "/api/v1/audit") in API_ROUTES
    assert ("GET", "/api/v1/me") in API_ROUTES
    assert len(API_ROUTES) >= 25


@pytest.mark.parametrize(("method", "template"), API_ROUTES)
def test_every_registered_route_has_a_rule(method: str, template: str) -> None:
    assert rule_for(method, template) is not None, f"{method} {template} needs a rule in RULES"


@pytest.mark.parametrize(
    ("method", "template", "scope"),
    [
        ("GET", "/api/v1/blocks", Scope.READ),
        ("HEAD", "/api/v1/profiles/{rid}", Scope.READ),
        ("GET", "/api/v1/blocks/{id}/stats", Scope.READ),
        ("GET", "/api/v1/records", Scope.READ),
        ("GET", "/api/v1/blocks/{id}/snippet", Scope.READ),
        ("POST", "/api/v1/blocks/{id}/preview", Scope.READ),
        ("PUT", "/api/v1/blocks/{id}", Scope.BLOCKS),
        ("DELETE", "/api/v1/blocks/{id}", Scope.BLOCKS),
        ("POST", "/api/v1/sign", Scope.BLOCKS),
        ("POST", "/api/v1/tokens", Scope.BLOCKS),
        ("PUT", "/api/v1/profiles/{rid}", Scope.DATA),
        ("PATCH", "/api/v1/profiles/{rid}", Scope.DATA),
        ("DELETE", "/api/v1/profiles/{rid}", Scope.DATA),
        ("POST", "/api/v1/events", Scope.DATA),
        ("POST", "/api/v1/inventory", Scope.DATA),
        ("PUT", "/api/v1/stores/{id}", Scope.DATA),
        ("POST", "/api/v1/segment", Scope.DATA),
        ("GET", "/api/v1/audit", Scope.ADMIN),
        ("GET", "/api/v1/me", None),
        ("DELETE", "/api/v1/{path}", None),
        # Not under a known collection: closed unless a rule is added.
        ("POST", "/api/v1/reindex", Scope.ADMIN),
        ("PUT", "/api/v1/blocksmith", Scope.ADMIN),
    ],
)
def test_scope_follows_method_and_path(method: str, template: str, scope: Scope | None) -> None:
    assert needed_scope(method, template) == scope


def test_rules_are_described() -> None:
    assert all(rule.what for rule in RULES)


# ------------------------------------------------------------------ the running app


def _path(template: str) -> str:
    return template.format(**SAMPLE_IDS)


async def _call(client: Client, method: str, template: str, headers: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("PUT", "POST", "PATCH"):
        kwargs["json"] = {}
    return await client.request(method, _path(template), **kwargs)


@pytest.mark.parametrize(
    ("method", "template"), [(m, t) for m, t in API_ROUTES if t not in PUBLIC_API_PATHS]
)
async def test_each_token_gets_403_exactly_without_the_scope(
    scoped_client: Client, store: redis.Redis, method: str, template: str
) -> None:
    needed = needed_scope(method, template)
    for name, (_, scopes) in SCOPED_TOKENS.items():
        held = {Scope(s) for s in scopes.split("+")}
        allowed = needed is None or Scope.ADMIN in held or needed in held
        response = await _call(scoped_client, method, template, bearer(name))
        assert response.status != 401, (name, await response.text())
        if allowed:
            assert response.status != 403, (name, await response.text())
            continue
        assert response.status == 403, (name, await response.text())
        if method != "HEAD":
            error = (await response.json())["error"]
            assert error["code"] == "forbidden"
            assert needed is not None
            assert needed.value in error["message"]
            assert error["details"] == [
                {"field": "scope", "message": f"needs {needed.value} (or admin)"}
            ]
    # A refused request did nothing. Checked where only the admin (whose request may
    # have written something) was let in, and the admin's request wrote nothing.
    if needed == Scope.ADMIN:
        assert data_keys(store) == []


async def test_a_refused_write_changes_nothing(scoped_client: Client, store: redis.Redis) -> None:
    block = {"width": 10, "height": 10, "default": {"layers": [{"type": "fill", "color": "#000"}]}}
    for name in ("reader", "crm"):
        response = await scoped_client.put("/api/v1/blocks/hero", json=block, headers=bearer(name))
        assert response.status == 403
    for name in ("reader", "designer"):
        response = await scoped_client.put(
            "/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=bearer(name)
        )
        assert response.status == 403
    assert data_keys(store) == []
    listed = await scoped_client.get("/api/v1/blocks", headers=bearer("reader"))
    assert (await listed.json())["blocks"] == []


async def test_allowed_writes_take_effect(scoped_client: Client) -> None:
    response = await scoped_client.put(
        "/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=bearer("crm")
    )
    assert response.status == 200
    read = await scoped_client.get("/api/v1/profiles/u1", headers=bearer("analyst"))
    assert (await read.json())["profile"] == {"first_name": "Ann"}
    signed = await scoped_client.post(
        "/api/v1/sign", json={"urls": ["/i/hero.png?r=u1"]}, headers=bearer("designer")
    )
    assert signed.status == 200
    assert "sig=" in (await signed.json())["urls"][0]


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("reader", ["read"]), ("analyst", ["read", "data"]), ("ops", ["admin"]), ("crm", ["data"])],
)
async def test_me_names_the_token_and_its_scopes(
    scoped_client: Client, name: str, scopes: list[str]
) -> None:
    response = await scoped_client.get("/api/v1/me", headers=bearer(name))
    assert response.status == 200
    assert await response.json() == {"name": name, "scopes": scopes}


async def test_me_for_a_full_access_token(scoped_client: Client) -> None:
    response = await scoped_client.get("/api/v1/me", headers={"Authorization": f"Bearer {TOKEN}"})
    assert await response.json() == {"name": LEGACY_TOKEN_NAME, "scopes": ["admin"]}
    assert (await scoped_client.get("/api/v1/me")).status == 401


async def test_unknown_paths_answer_404_to_any_valid_token(scoped_client: Client) -> None:
    response = await scoped_client.post("/api/v1/no-such-thing", json={}, headers=bearer("crm"))
    assert response.status == 404


# ------------------------------------------------------------------ /metrics


async def test_metrics_take_api_tokens_that_may_read(scoped_client: Client) -> None:
    for name in ("reader", "analyst", "ops"):
        assert (await scoped_client.get("/metrics", headers=bearer(name))).status == 200, name
    for name in ("crm", "designer"):
        assert (await scoped_client.get("/metrics", headers=bearer(name))).status == 401, name
    full = {"Authorization": f"Bearer {TOKEN}"}
    assert (await scoped_client.get("/metrics", headers=full)).status == 200


async def test_metrics_tokens_of_their_own_replace_the_apis(
    make_client: Any, scoped_settings: Settings
) -> None:
    client = await make_client(dataclasses.replace(scoped_settings, metrics_tokens=("scraper",)))
    assert (await client.get("/metrics", headers={"Authorization": "Bearer scraper"})).status == 200
    assert (await client.get("/metrics", headers=bearer("reader"))).status == 401


@pytest.mark.parametrize("target", ["/api/v1/blocks", "/metrics"])
async def test_authorization_bytes_that_are_not_utf8_get_401(
    scoped_client: Client, target: str
) -> None:
    assert scoped_client.server.host is not None
    reader, writer = await asyncio.open_connection(
        scoped_client.server.host, scoped_client.server.port
    )
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"Authorization: Bearer \xff\xfe\xc3(\r\n\r\n"
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert raw.split(b"\r\n", 1)[0].split()[1] == b"401", raw[:200]


def test_every_api_operation_documents_403() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    forbidden = {"$ref": "#/components/responses/Forbidden"}
    for path, item in document["paths"].items():
        if not path.startswith(API) or path in PUBLIC_API_PATHS:
            continue
        for method in ("get", "put", "post", "patch", "delete"):
            if method in item:
                assert item[method]["responses"].get("403") == forbidden, f"{method} {path}"
    scheme = document["components"]["securitySchemes"]["bearer"]["description"]
    for word in ("ATOPEN_API_TOKENS", *(scope.value for scope in Scope), "403"):
        assert word in scheme
