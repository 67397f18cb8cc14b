"""A connection whose open was refused is not read for a moment; the others are."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from support import AUTH, decode, put_block, signed
from test_serving import heavy_greeting, metric

from server.settings import Settings, SettingsError, load_settings

# Long enough that nothing else in the test could take as long.
PAUSE_MS = 3_000


async def fill_the_pool(client: Any) -> Any:
    """An open (a future of its answer) whose render holds the pool's only place, so
    that the others are refused."""
    busy = asyncio.ensure_future(client.get(signed("/i/heavy.png?r=u0&dpr=2")))
    for _ in range(1000):
        if await metric(client, "atopen_render_queue_depth") == 1:
            return busy
        await asyncio.sleep(0.005)
    raise AssertionError("the first render never started")


def image_request(reader: str) -> bytes:
    return (
        f"GET {signed(f'/i/heavy.png?r={reader}&dpr=2')} HTTP/1.1\r\nHost: atopen\r\n\r\n".encode()
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a kept-alive connection: status, headers, body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


@pytest.mark.slow
async def test_a_refused_connection_waits_unread_while_the_others_are_answered(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(
        replace(
            settings,
            render_threads=1,
            render_queue=0,
            render_deadline_ms=20_000,
            refusal_pause_ms=PAUSE_MS,
        )
    )
    await put_block(client, "heavy", heavy_greeting())
    for i in range(5):
        await client.put(f"/api/v1/profiles/u{i}", json={"first_name": f"N{i}"}, headers=AUTH)
    busy = await fill_the_pool(client)
    # Two proxies' connections, each fetching one image after another.
    proxies = [await asyncio.open_connection(client.host, client.port) for _ in range(2)]
    try:
        following = []
        for n, (reader, writer) in enumerate(proxies):
            writer.write(image_request(f"u{2 * n + 1}"))
            status, headers, body = await read_response(reader)
            assert (status, headers["x-atopen-variant"]) == (200, "default")
            assert decode(body).size == (2000, 2000)
            writer.write(image_request(f"u{2 * n + 2}"))
            await writer.drain()
            following.append(asyncio.ensure_future(read_response(reader)))
        # Other connections are read and answered meanwhile (the server runs on this
        # loop: each round trip takes it through several turns)...
        for _ in range(3):
            assert (await client.get("/healthz")).status == 200
        # ...while the refused ones' next opens wait, unread; then both are read.
        assert not any(answer.done() for answer in following)
        for status, headers, body in await asyncio.gather(*following):
            assert status == 200
            assert headers["x-atopen-variant"] in {"named", "default"}
            assert decode(body).size == (2000, 2000)
    finally:
        for _, writer in proxies:
            writer.close()
    assert (await busy).headers["X-Atopen-Variant"] == "named"


def test_the_pause_is_a_setting_that_can_be_off() -> None:
    base = {"ATOPEN_SECRET": "s"}
    assert load_settings(base).refusal_pause_ms == 250
    assert load_settings({**base, "ATOPEN_REFUSAL_PAUSE_MS": "0"}).refusal_pause_ms == 0
    with pytest.raises(SettingsError, match="ATOPEN_REFUSAL_PAUSE_MS"):
        load_settings({**base, "ATOPEN_REFUSAL_PAUSE_MS": "-1"})
