"""HTTP JSON sources (`data.NAME`) against a local aiohttp server and a real Redis."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from content_sources.expressions import Expression, Missing, MissingValueError, Template
from content_sources.http_data import Fetched, HttpData, select
from content_sources.http_data_spec import DataSourceError, HttpSourceSpec, parse_data_sources
from content_sources.outbound import guarded_connector, parse_allow

SECRET_VALUE = "s3cret-value"
CONTEXT: dict[str, object] = {
    "profile": {"city": "São Paulo"},
    "params": {"user": 'u"1', "host": "127.0.0.1"},
}


class Api:
    """A local JSON API: counts requests per path and can hold answers until released."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name == "weather":
            city = request.query.get("city", "")
            return web.json_response({"current": {"temp_c": 21.5, "city": city}, "n": None})
        if name == "echo":
            body = await request.json() if request.can_read_body else None
            auth = request.headers.get("Authorization", "none")
            return web.json_response({"auth": auth, "body": body, "query": dict(request.query)})
        if name == "held":
            self.arrived.set()
            await self.release.wait()
            return web.json_response({"value": 7})
        if name == "huge":
            return await self._stream(request)
        if name == "huge-declared":
            return web.Response(
                body=b"[" + b"0," * 100_000 + b"0]", content_type="application/json"
            )
        if name == "malformed":
            return web.Response(body=b'{"a": ', content_type="application/json")
        if name == "down":
            return web.json_response({"error": "maintenance"}, status=503)
        if name == "html":
            return web.Response(body=b'{"a": 1}', content_type="text/html")
        return web.json_response({"error": "no such path"}, status=404)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """1 MiB of JSON in chunks, without a Content-Length: only streaming can stop it."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await response.write(b"[0")
            for _ in range(16):
                await response.write(b",0" * 32 * 1024)
            await response.write(b"]")
        except ConnectionResetError:
            pass  # the client stopped reading, as it should
        return response


@pytest.fixture
async def api(aiohttp_server: Any) -> AsyncIterator[tuple[Api, TestServer]]:
    local = Api()
    server: TestServer = await aiohttp_server(local.app())
    yield local, server
    local.release.set()  # let held handlers finish so the server stops at once


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.from_url(redis_url) as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The server's kind of session, with the local API's network allowed."""
    connector = guarded_connector(parse_allow("127.0.0.1/32"))
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as client:
        yield client


@pytest.fixture
def http_data(session: aiohttp.ClientSession, store: aioredis.Redis) -> HttpData:
    return HttpData({"TOKEN": SECRET_VALUE}, session, store)


def base(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def specs(**sources: Mapping[str, object]) -> dict[str, HttpSourceSpec]:
    """Parsed sources; a generous timeout unless one is given, so a busy machine passes."""
    return parse_data_sources({n: {"timeout_ms": 10_000, **s} for n, s in sources.items()})


def outcomes(fetched: Fetched) -> dict[str, str]:
    return {entry.name: entry.outcome for entry in fetched.trace}


def dead_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_answers_are_selected_and_urls_carry_recipient_data(
    api: tuple[Api, TestServer], http_data: HttpData
) -> None:
    _, server = api
    url = base(server) + "/weather?city={{ profile.city | urlencode }}"
    fetched = await http_data.fetch_all(
        specs(
            temp={"url": url, "select": "current.temp_c"},
            city={"url": url, "select": "current.city", "ttl_s": 0},
            whole={"url": url},
        ),
        CONTEXT,
    )
    assert fetched.values["temp"] == 21.5
    assert fetched.values["city"] == "São Paulo"
    assert fetched.values["whole"] == {
        "current": {"temp_c": 21.5, "city": "São Paulo"},
        "n": None,
    }
    assert outcomes(fetched) == {"temp": "ok", "city": "ok", "whole": "ok"}
    context = {"data": fetched.values}
    assert Expression("data.temp > 20").holds(context)
    assert Template("{{ data.whole.current.city }}").render(context) == "São Paulo"
    with pytest.raises(MissingValueError):  # a null member never prints as a blank
        Template("{{ data.whole.n }}").render(context)
    with pytest.raises(MissingValueError):  # nor does a source the block did not declare
        Expression("data.rain > 0").holds(context)


async def test_a_post_sends_its_rendered_json_body(
    api: tuple[Api, TestServer], http_data: HttpData
) -> None:
    _, server = api
    source = {
        "url": base(server) + "/echo",
        "method": "POST",
        "body": '{"user": {{ params.user | tojson }}}',
        "select": "body.user",
    }
    fetched = await http_data.fetch_all(specs(recs=source), CONTEXT)
    assert fetched.values["recs"] == 'u"1'


async def test_answers_are_cached_in_redis_for_every_process(
    api: tuple[Api, TestServer], session: aiohttp.ClientSession, store: aioredis.Redis
) -> None:
    local, server = api
    declared = specs(temp={"url": base(server) + "/weather?city=Oslo", "ttl_s": 600})
    first = await HttpData({}, session, store).fetch_all(declared, CONTEXT)
    second = await HttpData({}, session, store).fetch_all(declared, CONTEXT)  # another process
    assert local.hits["weather"] == 1
    assert outcomes(first) == {"temp": "ok"}
    assert outcomes(second) == {"temp": "cached"}
    assert second.values == first.values
    keys = [key async for key in store.scan_iter(match="atopen:http:*")]
    assert len(keys) == 1
    assert 0 < await store.ttl(keys[0]) <= 600
    assert b"Oslo" not in keys[0]  # the key is a digest: no recipient data in key names


async def test_a_slow_answer_is_missing_once_the_timeout_passes(
    api: tuple[Api, TestServer], http_data: HttpData
) -> None:
    local, server = api
    fetched = await http_data.fetch_all(
        specs(slow={"url": base(server) + "/held", "timeout_ms": 50}), CONTEXT
    )
    assert not local.release.is_set()  # the server has still not answered
    assert isinstance(fetched.values["slow"], Missing)
    assert fetched.trace[0].outcome == "timeout"
    assert fetched.trace[0].detail == "no answer within 50 ms"


async def test_the_opens_deadline_bounds_every_source(
    api: tuple[Api, TestServer], http_data: HttpData
) -> None:
    _, server = api
    declared = specs(slow={"url": base(server) + "/held", "timeout_ms": 30_000})
    fetched = await http_data.fetch_all(declared, CONTEXT, deadline=0.0)  # long passed
    assert isinstance(fetched.values["slow"], Missing)
    assert fetched.trace[0].outcome == "timeout"
    assert fetched.trace[0].detail == "the open's deadline passed"


@pytest.mark.parametrize(
    ("path", "select_path", "detail"),
    [
        ("huge", "", "the answer is larger than 1024 bytes"),
        ("huge-declared", "", "the answer is larger than 1024 bytes"),
        ("malformed", "", "the answer is not valid JSON"),
        ("down", "", "status 503"),
        ("html", "", "the content type is not JSON"),
        ("weather", "current.rain", "no 'current.rain' in the answer (stopped at 'rain')"),
        ("weather", "n", "the selected value is null"),
    ],
)
async def test_a_bad_answer_is_a_missing_value(
    api: tuple[Api, TestServer], http_data: HttpData, path: str, select_path: str, detail: str
) -> None:
    local, server = api
    source = {"url": f"{base(server)}/{path}", "max_bytes": 1024, "select": select_path}
    fetched = await http_data.fetch_all(specs(bad=source), CONTEXT)
    value = fetched.values["bad"]
    assert isinstance(value, Missing)
    assert fetched.trace[0].outcome == "error"
    assert fetched.trace[0].detail == detail
    with pytest.raises(MissingValueError):
        Expression("data.bad == 1").holds({"data": fetched.values})
    assert Template("{{ data.bad | default('n/a') }}").render({"data": fetched.values}) == "n/a"
    assert sum(local.hits.values()) == 1


async def test_identical_concurrent_misses_make_one_request(
    api: tuple[Api, TestServer], http_data: HttpData
) -> None:
    local, server = api
    declared = specs(v={"url": base(server) + "/held", "select": "value"})
    opens = [asyncio.ensure_future(http_data.fetch_all(declared, CONTEXT)) for _ in range(5)]
    await local.arrived.wait()
    local.release.set()
    results = await asyncio.gather(*opens)
    assert local.hits["held"] == 1
    assert [r.values["v"] for r in results] == [7] * 5
    details = sorted(r.trace[0].detail for r in results)
    assert details == [""] + ["shared with a concurrent open"] * 4


async def test_hosts_are_fixed_by_the_block(
    api: tuple[Api, TestServer], http_data: HttpData
) -> None:
    local, server = api
    bad_urls = {
        "templated_host": "https://{{ params.host }}/x",
        "host_completed_by_template": "https://api.example.com{{ params.path }}",
        "templated_scheme": "{{ params.scheme }}://api.example.com/x",
        "credentials": "https://user:pw@api.example.com/x",
        "not_http": "ftp://api.example.com/x",
    }
    with pytest.raises(DataSourceError) as caught:
        parse_data_sources({name: {"url": url} for name, url in bad_urls.items()})
    assert sorted(f for f, _ in caught.value.problems) == sorted(f"data.{n}.url" for n in bad_urls)

    # A templated host is allowed only when listed, and checked again once rendered.
    url = "http://{{ params.host }}:" + str(server.port) + "/weather"
    declared = specs(temp={"url": url, "allow_hosts": ["127.0.0.1"], "select": "current.temp_c"})
    allowed = await http_data.fetch_all(declared, CONTEXT)
    elsewhere = {**CONTEXT, "params": {"host": "localhost"}}
    refused = await http_data.fetch_all(declared, elsewhere)
    assert allowed.values["temp"] == 21.5
    assert isinstance(refused.values["temp"], Missing)
    assert refused.trace[0].detail == "host 'localhost' is not allowed for this source"
    assert local.hits["weather"] == 1


async def test_secrets_reach_headers_only(
    api: tuple[Api, TestServer],
    http_data: HttpData,
    session: aiohttp.ClientSession,
    store: aioredis.Redis,
) -> None:
    _, server = api
    source = {
        "url": base(server) + "/echo",
        "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
        "select": "auth",
    }
    fetched = await http_data.fetch_all(specs(auth=source), CONTEXT)
    assert fetched.values["auth"] == f"Bearer {SECRET_VALUE}"
    assert SECRET_VALUE not in repr(fetched.trace)

    with pytest.raises(DataSourceError) as caught:
        parse_data_sources(
            {
                "in_url": {"url": "https://api.example.com/?k={{ secrets.TOKEN }}"},
                "in_body": {
                    "url": "https://api.example.com/",
                    "method": "POST",
                    "body": "{{ secrets.TOKEN }}",
                },
                "recipient_in_header": {
                    "url": "https://api.example.com/",
                    "headers": {"X-City": "{{ profile.city }}"},
                },
                "unknown_secret": {
                    "url": "https://api.example.com/",
                    "headers": {"Authorization": "{{ secrets.OTHER }}"},
                },
            },
            secret_names={"TOKEN"},
        )
    assert [f for f, _ in caught.value.problems] == [
        "data.in_url.url",
        "data.in_body.body",
        "data.recipient_in_header.headers.X-City",
        "data.unknown_secret.headers.Authorization",
    ]
    assert "ATOPEN_SECRET_OTHER" in str(caught.value)

    # A server without the secret: the source is missing, and says why (not the value).
    unconfigured = await HttpData({}, session, store).fetch_all(specs(auth=source), {})
    assert isinstance(unconfigured.values["auth"], Missing)
    assert (
        unconfigured.trace[0].detail == "header Authorization needs a secret that is not configured"
    )


async def test_a_broken_source_never_raises(
    api: tuple[Api, TestServer], session: aiohttp.ClientSession, http_data: HttpData
) -> None:
    _, server = api
    refused = f"http://127.0.0.1:{dead_port()}/x"
    declared = specs(
        refused={"url": refused},
        needs_missing={"url": base(server) + "/weather?zip={{ profile.zip }}"},
        weather={"url": base(server) + "/weather", "select": "current.temp_c"},
    )
    fetched = await http_data.fetch_all(declared, CONTEXT)
    assert outcomes(fetched) == {"refused": "error", "needs_missing": "skipped", "weather": "ok"}
    assert isinstance(fetched.values["refused"], Missing)
    assert isinstance(fetched.values["needs_missing"], Missing)

    # The shared cache is down: missing too, rather than every process calling the API.
    async with aioredis.from_url(
        f"redis://127.0.0.1:{dead_port()}", socket_connect_timeout=1
    ) as down:
        cacheless = await HttpData({}, session, down).fetch_all(declared, CONTEXT)
    assert outcomes(cacheless)["weather"] == "error"
    assert cacheless.trace[2].detail == "the cache is unavailable"
    assert all(isinstance(v, Missing) for v in cacheless.values.values())


def test_select_walks_keys_and_list_indexes_only() -> None:
    document = {"items": [{"name": "boots"}, {"name": "scarf"}], "0": "zero"}
    assert select(document, ["items", "1", "name"]) == "scarf"
    assert select(document, ["0"]) == "zero"
    assert select(document, []) == document
    for path in (["items", "2"], ["items", "name"], ["items", "0", "name", "x"], ["__class__"]):
        with pytest.raises(LookupError):
            select(document, path)


def test_every_bad_field_is_named() -> None:
    raw = {
        "w": {
            "url": "https://api.example.com/{{ profile.city",
            "method": "DELETE",
            "timeout_ms": 0,
            "ttl_s": -1,
            "max_bytes": "big",
            "select": "a..b",
            "allow_hosts": ["https://x.example.com"],
            "headers": {"Host": "x", "X-Ok": "line\nbreak"},
            "body": "{}",
            "extra": 1,
        },
        "bad name": {"url": "https://api.example.com/"},
    }
    with pytest.raises(DataSourceError) as caught:
        parse_data_sources(raw)
    assert sorted(f for f, _ in caught.value.problems) == sorted(
        [
            "data.w.extra",
            "data.w.method",
            "data.w.url",
            "data.w.allow_hosts",
            "data.w.body",
            "data.w.headers.Host",
            "data.w.headers.X-Ok",
            "data.w.timeout_ms",
            "data.w.ttl_s",
            "data.w.max_bytes",
            "data.w.select",
            "data.bad name",
        ]
    )
    with pytest.raises(DataSourceError):
        parse_data_sources({f"s{i}": {"url": "https://a.example.com/"} for i in range(11)})


def test_a_spec_names_what_the_open_must_gather_first() -> None:
    declared = parse_data_sources(
        {
            "recs": {
                "url": "https://shop.example.com/recs?u={{ params.user }}",
                "method": "POST",
                "body": '{"city": {{ profile.city | tojson }}}',
            }
        }
    )
    assert declared["recs"].names == {"params", "profile"}
    assert declared["recs"].hosts == {"shop.example.com"}
