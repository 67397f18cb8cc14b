"""Where live data and remote images may connect: real local servers as the targets.

By default only public addresses are fetched, so a loopback server must be out of
reach however its address is written, whatever a name resolves to, and after a
redirect; `ATOPEN_FETCH_ALLOW` makes a network reachable. Names other than `localhost`
are resolved by a resolver the tests give, never by DNS.
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from PIL import Image
from sample_blocks import greeting
from support import AUTH, free_port, put_block

from content_sources.expressions import Missing
from content_sources.http_data import HttpData
from content_sources.http_data_spec import parse_data_sources
from content_sources.outbound import IPNetwork, guarded_connector, parse_allow
from server.opens.remote_images import RemoteImageError, RemoteImageLimits, RemoteImages
from server.settings import SettingsError, load_settings

LOOPBACK = parse_allow("127.0.0.1/32")

# Each names a loopback, private or otherwise internal address; `{port}` is a local
# server's, so a fetch that got through would be answered.
INTERNAL_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "0.0.0.0",  # noqa: S104 - a destination here: connecting to it reaches this host
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::1]",
    "2130706433",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "127.0.0.1.",
    "169.254.169.254",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "[fe80::1]",
    "[fd00::1]",
    "[ff02::1]",
]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 20), "#ff0000").save(out, format="PNG")
    return out.getvalue()


class Names(AbstractResolver):
    """Names resolved from a table: stands in for DNS, whose answers tests choose."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(f"{host}: no such name")
        address = self.table[host]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


class Api:
    """A local JSON API and image server that counts the requests it gets."""

    def __init__(self) -> None:
        self.hits = 0

    def app(self, redirect_to: str | None = None) -> web.Application:
        async def answer(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            if redirect_to is not None:
                raise web.HTTPFound(redirect_to)
            if request.path.endswith(".png"):
                return web.Response(body=png(), content_type="image/png")
            return web.json_response({"temp_c": 21})

        app = web.Application()
        app.router.add_get("/{name}", answer)
        return app


ServerFactory = Callable[..., Any]


@pytest.fixture
async def api(aiohttp_server: ServerFactory) -> tuple[Api, TestServer]:
    local = Api()
    server: TestServer = await aiohttp_server(local.app())
    return local, server


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.from_url(redis_url) as client:
        yield client


@asynccontextmanager
async def live_data(
    store: aioredis.Redis,
    allow: Sequence[IPNetwork] = (),
    resolver: AbstractResolver | None = None,
) -> AsyncIterator[HttpData]:
    """Live data as the server builds it: its session's connector is the guarded one."""
    connector = guarded_connector(allow, resolver=resolver)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        yield HttpData({}, session, store)


async def fetch_one(data: HttpData, url: str, block: str = "b") -> tuple[object, str, str]:
    """One source's value, outcome and detail."""
    specs = parse_data_sources({"v": {"url": url, "ttl_s": 0, "timeout_ms": 5000}})
    fetched = await data.fetch_all(specs, {}, block=block)
    return fetched.values["v"], fetched.trace[0].outcome, fetched.trace[0].detail


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_live_data_refuses_internal_addresses_however_written(
    api: tuple[Api, TestServer], store: aioredis.Redis, host: str
) -> None:
    local, server = api
    async with live_data(store) as data:
        value, outcome, detail = await fetch_one(data, f"http://{host}:{server.port}/weather")
    assert (outcome, detail) == ("refused", "not an address atopen may fetch from")
    assert isinstance(value, Missing)
    assert local.hits == 0


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_remote_images_refuse_internal_addresses_however_written(
    api: tuple[Api, TestServer], host: str
) -> None:
    local, server = api
    images = RemoteImages(RemoteImageLimits(allow_http=True))
    try:
        with pytest.raises(RemoteImageError) as caught:
            await images.fetch(f"http://{host}:{server.port}/ok.png")
    finally:
        await images.close()
    assert str(caught.value).endswith(": refused: not an address atopen may fetch from")
    assert local.hits == 0


async def test_a_public_looking_name_that_resolves_to_loopback_is_refused(
    api: tuple[Api, TestServer], store: aioredis.Redis
) -> None:
    local, server = api
    dns = Names({"api.example.com": "127.0.0.1", "mapped.example.com": "::ffff:127.0.0.1"})
    async with live_data(store, resolver=dns) as data:
        for name in dns.table:
            _, outcome, _ = await fetch_one(data, f"http://{name}:{server.port}/weather")
            assert outcome == "refused"
    assert local.hits == 0
    async with live_data(store, LOOPBACK, resolver=dns) as data:
        value, outcome, _ = await fetch_one(data, f"http://api.example.com:{server.port}/weather")
    assert (value, outcome) == ({"temp_c": 21}, "ok")
    assert local.hits == 1


async def test_an_allowed_network_is_fetched_and_nothing_beyond_it(
    api: tuple[Api, TestServer], store: aioredis.Redis
) -> None:
    local, server = api
    async with live_data(store, LOOPBACK) as data:
        for host in ("127.0.0.1", "localhost"):
            value, outcome, _ = await fetch_one(data, f"http://{host}:{server.port}/weather")
            assert (value, outcome) == ({"temp_c": 21}, "ok")
        # Still refused: loopback outside the listed network, and odd spellings of it.
        for host in ("127.0.0.2", "[::1]", "0x7f.1", "2130706433"):
            _, outcome, _ = await fetch_one(data, f"http://{host}:{server.port}/weather")
            assert outcome == "refused", host
    assert local.hits == 2

    images = RemoteImages(RemoteImageLimits(allow_http=True, fetch_allow=LOOPBACK))
    try:
        asset = await images.fetch(f"http://127.0.0.1:{server.port}/ok.png")
    finally:
        await images.close()
    assert asset.image.size == (40, 20)


@pytest.mark.parametrize(
    "target", ["http://127.0.0.2:{port}/ok.png", "http://inner.test:{port}/ok.png"]
)
async def test_a_redirect_to_an_internal_address_is_refused(
    aiohttp_server: ServerFactory, target: str
) -> None:
    inner = Api()
    inner_server: TestServer = await aiohttp_server(inner.app(), host="127.0.0.2")
    outer = Api()
    location = target.format(port=inner_server.port)
    outer_server: TestServer = await aiohttp_server(outer.app(redirect_to=location))
    url = f"http://127.0.0.1:{outer_server.port}/moved.png"
    dns = Names({"inner.test": "127.0.0.2"})

    images = RemoteImages(RemoteImageLimits(allow_http=True, fetch_allow=LOOPBACK), resolver=dns)
    try:
        with pytest.raises(RemoteImageError, match="refused"):
            await images.fetch(url)
    finally:
        await images.close()
    assert (outer.hits, inner.hits) == (1, 0)

    wider = RemoteImageLimits(allow_http=True, fetch_allow=parse_allow("127.0.0.0/8"))
    images = RemoteImages(wider, resolver=dns)
    try:
        asset = await images.fetch(url)
    finally:
        await images.close()
    assert asset.image.size == (40, 20)
    assert (outer.hits, inner.hits) == (2, 1)


async def test_why_a_fetch_failed_is_logged_with_the_block_not_answered(
    store: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    closed = free_port()
    caplog.set_level(logging.WARNING, logger="atopen.http_data")
    async with live_data(store, LOOPBACK) as data:
        _, refused, refused_detail = await fetch_one(data, "http://10.0.0.1/x", block="promo")
        _, failed, failed_detail = await fetch_one(
            data, f"http://127.0.0.1:{closed}/x", block="promo"
        )
    assert (refused, refused_detail) == ("refused", "not an address atopen may fetch from")
    assert (failed, failed_detail) == ("error", "the request failed")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("promo" in line and "10.0.0.1" in line for line in lines)
    assert any("promo" in line and str(closed) in line for line in lines)


async def test_the_preview_says_why_a_source_failed_without_any_address(
    make_client: Any, settings: Any, aiohttp_server: ServerFactory
) -> None:
    local = Api()
    server: TestServer = await aiohttp_server(local.app())
    closed = free_port()
    block = greeting("{{ data.loopback }} {{ data.name }} {{ data.closed }}")
    block["data"] = {
        "loopback": {"url": f"http://127.0.0.2:{server.port}/weather"},
        "name": {"url": f"http://localhost:{server.port}/weather"},
        "closed": {"url": f"http://127.0.0.1:{closed}/weather"},
    }
    # The loopback network is allowed, so the closed port is tried: its failure must
    # not tell a refused connection from a port that answers.
    client = await make_client(replace(settings, fetch_allow=LOOPBACK))
    await put_block(client, "probe", block)
    preview = await client.post(
        "/api/v1/blocks/probe/preview",
        json={"recipient": "u1"},
        headers={**AUTH, "Accept": "application/json"},
    )
    assert preview.status == 200
    text = await preview.text()
    sources = {s["name"]: (s["outcome"], s["detail"]) for s in (await preview.json())["sources"]}
    assert sources["loopback"] == ("refused", "not an address atopen may fetch from")
    assert sources["name"][0] == "ok"
    assert sources["closed"] == ("error", "the request failed")
    for revealing in ("127.0.0", str(closed), str(server.port), "Connect", "Errno"):
        assert revealing not in text
    assert local.hits == 1


def test_the_allow_list_setting_is_checked_at_startup() -> None:
    loaded = load_settings({"ATOPEN_FETCH_ALLOW": "10.0.0.0/8, 127.0.0.1/32,fd00::/8"})
    assert [str(n) for n in loaded.fetch_allow] == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
    assert load_settings({}).fetch_allow == ()
    for bad in ("10.0.0.1/8", "intranet", "10.0.0.0/8,,", "10.0.0.0/33"):
        with pytest.raises(SettingsError, match="ATOPEN_FETCH_ALLOW"):
            load_settings({"ATOPEN_FETCH_ALLOW": bad})
