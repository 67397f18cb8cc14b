"""Every management API route demands a valid bearer token; the OpenAPI document does not."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from sample_blocks import greeting
from support import AUTH, TOKEN, data_keys

from server.settings import Settings
from server.web.app import create_app

Client = TestClient[Any, Any]
OPENAPI = "/api/v1/openapi.json"
SAMPLE_IDS = {"id": "hero", "rid": "u1", "sku": "sku-1"}

# A body each route would accept if the request were authenticated, so a route that
# forgot the check would write something the test then finds in the store.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/v1/blocks/{id}"): greeting(),
    ("POST", "/api/v1/blocks/{id}/preview"): {"recipient": "u1"},
    ("PUT", "/api/v1/profiles/{rid}"): {"first_name": "Ann"},
    ("PATCH", "/api/v1/profiles/{rid}"): {"first_name": "Ann"},
    ("POST", "/api/v1/events"): {"recipient": "u1", "type": "view"},
    ("PUT", "/api/v1/inventory/{sku}"): {"stock": 3},
    ("PATCH", "/api/v1/inventory/{sku}"): {"stock": 3},
    ("POST", "/api/v1/inventory"): [{"sku": "sku-1", "stock": 3}],
    ("POST", "/api/v1/sign"): {"urls": ["/i/hero.png?r=u1"]},
}


def _api_routes(app_routes: Any) -> list[tuple[str, str]]:
    found = {
        (route.method, route.resource.canonical)
        for route in app_routes
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.resource.canonical != OPENAPI
        and route.method != "*"  # the JSON 404/405 for paths no route serves (tested below)
    }
    return sorted(found)


# The route table of the real app factory (building it connects to nothing).
_TABLE_APP = create_app(
    Settings(secrets=("route-table",), api_tokens=("t",)), redis_url="redis://127.0.0.1:1/0"
)
API_ROUTES = _api_routes(_TABLE_APP.router.routes())


def _path(template: str) -> str:
    return template.format(**SAMPLE_IDS)


async def _call(client: Client, method: str, template: str, headers: dict[str, str]) -> Any:
    body = BODIES.get((method, template))
    kwargs: dict[str, Any] = {"headers": headers}
    if method not in ("GET", "HEAD", "DELETE"):
        kwargs["json"] = body if body is not None else {}
    return await client.request(method, _path(template), **kwargs)


def _assert_unauthorized_body(payload: Any) -> None:
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "unauthorized"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)


def test_route_table_covers_the_whole_api() -> None:
    # A sanity floor: if the enumeration broke, the parametrized tests would test nothing.
    methods_and_paths = set(API_ROUTES)
    assert ("PUT", "/api/v1/blocks/{id}") in methods_and_paths
    assert ("POST", "/api/v1/events") in methods_and_paths
    assert ("POST", "/api/v1/sign") in methods_and_paths
    assert ("DELETE", "/api/v1/profiles/{rid}") in methods_and_paths
    assert len(methods_and_paths) >= 20


async def test_running_app_has_the_enumerated_routes(client: Client) -> None:
    assert _api_routes(client.app.router.routes()) == API_ROUTES


BAD_AUTH = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token with suffix": {"Authorization": f"Bearer {TOKEN}x"},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "token without scheme": {"Authorization": TOKEN},
    "empty bearer": {"Authorization": "Bearer "},
}


@pytest.mark.parametrize(("method", "template"), API_ROUTES)
async def test_api_route_refuses_a_request_without_a_valid_token(
    client: Client, store: redis.Redis, method: str, template: str
) -> None:
    for case, headers in BAD_AUTH.items():
        response = await _call(client, method, template, headers)
        assert response.status == 401, (case, await response.text())
        if method != "HEAD":
            assert response.content_type == "application/json", case
            _assert_unauthorized_body(await response.json())
    # Refused means not acted on: nothing reached the store.
    assert data_keys(store) == []


@pytest.mark.parametrize(("method", "template"), API_ROUTES)
async def test_api_route_is_closed_when_no_token_is_configured(
    make_client: Any, settings: Settings, store: redis.Redis, method: str, template: str
) -> None:
    client = await make_client(dataclasses.replace(settings, api_tokens=()))
    for headers in ({}, AUTH, {"Authorization": "Bearer "}):
        response = await _call(client, method, template, headers)
        assert response.status == 401, await response.text()
        if method != "HEAD":
            _assert_unauthorized_body(await response.json())
    assert data_keys(store) == []


async def test_valid_token_is_accepted(client: Client) -> None:
    response = await client.get("/api/v1/blocks", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"blocks": []}


async def test_scheme_is_case_insensitive(client: Client) -> None:
    response = await client.get("/api/v1/blocks", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200


async def test_every_configured_token_works_during_rotation(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(dataclasses.replace(settings, api_tokens=("old-token", "new-token")))
    for token in ("old-token", "new-token"):
        response = await client.put(
            "/api/v1/profiles/u1",
            json={"first_name": token},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status == 200, await response.text()
    refused = await client.get("/api/v1/profiles/u1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status == 401
    read = await client.get("/api/v1/profiles/u1", headers={"Authorization": "Bearer new-token"})
    assert (await read.json())["profile"] == {"first_name": "new-token"}


async def test_openapi_document_is_readable_without_a_token(client: Client) -> None:
    response = await client.get(OPENAPI)
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/blocks/{id}" in document["paths"]


async def test_openapi_document_is_readable_with_no_tokens_configured(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(dataclasses.replace(settings, api_tokens=()))
    response = await client.get(OPENAPI)
    assert response.status == 200
    assert "paths" in await response.json()


async def test_unknown_api_path_is_not_revealed_without_a_token(client: Client) -> None:
    response = await client.get("/api/v1/no-such-thing")
    assert response.status == 401
    _assert_unauthorized_body(await response.json())


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/../v1/blocks",
        "/api/v1/./blocks",
        "/%61pi/v1/%62locks",
        "/api/v1/openapi.json/../blocks",
        "/api/v1/openapi.json%2F..%2Fblocks",
        "http://atopen.example/api/v1/blocks",
        "//api/v1/blocks",
        "/api//v1/blocks",
    ],
)
async def test_path_tricks_do_not_bypass_the_token(client: Client, target: str) -> None:
    """Request targets sent verbatim (the client library would normalise them)."""
    response = await client.put("/api/v1/blocks/hero", json=greeting(), headers=AUTH)
    assert response.status == 201
    assert client.server.host is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.split()[1] in (b"401", b"404"), status_line
    assert b"hero" not in rest.partition(b"\r\n\r\n")[2]
