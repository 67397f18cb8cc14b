"""A URL's signature covers its path and query as sent, whatever form the request target
takes: a path with its query (what mail clients send), a whole URL (what some proxies
send), or a path with a fragment (which is not part of what was signed)."""

from __future__ import annotations

import asyncio
from typing import Any

from sample_blocks import greeting
from support import AUTH, put_block, signed


async def raw_get(client: Any, target: str) -> dict[str, str]:
    """The status line and headers of `GET target`, sent as written (no client library
    rewrites it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    finally:
        writer.close()
    status, *lines = head.strip().split("\r\n")
    headers = {"status": status.split(" ")[1]}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def test_a_signed_open_is_the_readers_in_every_form_of_request_target(client: Any) -> None:
    await put_block(client, "names", greeting())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    path = signed("/i/names.png?r=u1")
    port = client.server.port
    for target in (path, f"http://127.0.0.1:{port}{path}", f"{path}#top"):
        answer = await raw_get(client, target)
        assert answer["status"] == "200", target
        assert answer["x-atopen-variant"] == "named", target


async def test_a_query_changed_after_signing_is_not_the_readers_in_any_form(client: Any) -> None:
    await put_block(client, "names", greeting())
    await client.put("/api/v1/profiles/u2", json={"first_name": "Bob"}, headers=AUTH)
    tampered = signed("/i/names.png?r=u1").replace("r=u1", "r=u2")
    port = client.server.port
    for target in (tampered, f"http://127.0.0.1:{port}{tampered}", f"{tampered}#top"):
        answer = await raw_get(client, target)
        assert answer["status"] == "200", target
        assert answer["x-atopen-variant"] == "default", target


async def test_a_signed_click_goes_to_the_readers_page_from_a_whole_url(client: Any) -> None:
    await put_block(client, "names", greeting())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    path = signed("/c/names?r=u1")
    answer = await raw_get(client, f"http://127.0.0.1:{client.server.port}{path}")
    assert answer["status"] == "302"
    assert answer["location"] == "https://shop.example.com/named"
