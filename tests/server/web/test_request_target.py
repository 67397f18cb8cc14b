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


def every_form(client: Any, path: str) -> tuple[str, ...]:
    """`path` as each kind of request target: itself, a whole URL, and with a fragment."""
    return (path, f"http://127.0.0.1:{client.server.port}{path}", f"{path}#top")


async def with_readers(client: Any) -> None:
    """The greeting block, and readers u1 (Ann) and u2 (Bob) with profiles."""
    await put_block(client, "names", greeting())
    for reader, name in (("u1", "Ann"), ("u2", "Bob")):
        await client.put(f"/api/v1/profiles/{reader}", json={"first_name": name}, headers=AUTH)


async def test_a_signed_open_is_the_readers_in_every_form_of_request_target(client: Any) -> None:
    await with_readers(client)
    for target in every_form(client, signed("/i/names.png?r=u1")):
        answer = await raw_get(client, target)
        assert answer["status"] == "200", target
        assert answer["x-atopen-variant"] == "named", target


async def test_a_query_changed_after_signing_is_not_the_readers_in_any_form(client: Any) -> None:
    await with_readers(client)
    tampered = signed("/i/names.png?r=u1").replace("r=u1", "r=u2")
    for target in every_form(client, tampered):
        answer = await raw_get(client, target)
        assert answer["status"] == "200", target
        assert answer["x-atopen-variant"] == "default", target


async def test_a_signed_click_goes_to_the_readers_page_from_a_whole_url(client: Any) -> None:
    await with_readers(client)
    path = signed("/c/names?r=u1")
    answer = await raw_get(client, f"http://127.0.0.1:{client.server.port}{path}")
    assert answer["status"] == "302"
    assert answer["location"] == "https://shop.example.com/named"
