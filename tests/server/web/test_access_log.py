"""With the log level at INFO, every request gets an access line with its id, and an
image open its outcome and variant too; below INFO, none."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from support import AUTH, put_block, signed
from test_serving import SHARED_BLOCK

from server.settings import Settings
from server.web.app import create_app
from server.web.logs import JsonAccessLogger


async def access_lines(
    aiohttp_client: Any, settings: Settings, redis_url: str, caplog: pytest.LogCaptureFixture
) -> list[dict[str, Any]]:
    server = TestServer(create_app(settings, redis_url=redis_url))
    await server.start_server(access_log_class=JsonAccessLogger)
    client = await aiohttp_client(server)
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    await put_block(client, "shared", SHARED_BLOCK)
    for reader in ("u1", "u2", "u3"):
        response = await client.get(
            signed(f"/i/shared.png?r={reader}"), headers={"X-Request-Id": f"esp-{reader}"}
        )
        assert response.headers["X-Atopen-Variant"] == "stock"
    return [
        record.fields  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "aiohttp.access" and record.fields["path"].startswith("/i/")  # type: ignore[attr-defined]
    ]


async def test_each_open_logged_at_info_carries_its_id_outcome_and_variant(
    aiohttp_client: Any, settings: Settings, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    lines = await access_lines(aiohttp_client, settings, redis_url, caplog)
    assert [line["request_id"] for line in lines] == ["esp-u1", "esp-u2", "esp-u3"]
    assert all(line["variant"] == "stock" for line in lines)
    assert all(line["outcome"] in ("rendered", "cached") for line in lines)
    assert lines[-1]["outcome"] == "cached"


async def test_below_info_no_open_is_logged(
    aiohttp_client: Any, settings: Settings, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp.access")
    assert await access_lines(aiohttp_client, settings, redis_url, caplog) == []
