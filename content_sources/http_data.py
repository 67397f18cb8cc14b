"""`data`: live JSON from HTTP APIs a block declares ("connected content").

A block names its sources in its `data` field; rules read the answers as `data.NAME`:

    "data": {"weather": {
        "url": "https://api.example.com/weather?city={{ profile.city | urlencode }}",
        "headers": {"Authorization": "Bearer {{ secrets.WEATHER_TOKEN }}"},
        "timeout_ms": 300, "ttl_s": 600, "max_bytes": 65536, "select": "current.temp_c"}}

Everything that can be checked without a recipient is checked at `PUT`
(`http_data_spec.parse_data_sources`). The rules that keep marketers' data where it belongs:

- The host is fixed by the block: it must be written literally in the URL template
  (scheme and host before any `{{`), or listed in `allow_hosts`; the rendered URL is
  checked against that list again, so a template cannot send recipient data elsewhere.
  Redirects are not followed, for the same reason.
- The address is checked too: the client session connects only to public addresses
  and the networks in `ATOPEN_FETCH_ALLOW` (`content_sources.outbound`, whose
  connector the server's session uses), whatever the URL's spelling or DNS answer.
- Secrets (API keys) come from the server's configuration, never from the block, and only
  header templates see them, as `secrets.NAME`; header templates see nothing else, so a
  secret cannot be moved into a URL, a body or the cache key. URL and body templates see
  the recipient's context, never `secrets` or other `data`.

At open time `HttpData.fetch_all` renders the URLs with the recipient's context, answers
from a TTL cache shared by all processes in Redis, fetches the misses concurrently (one
request per process for identical concurrent misses), and gives each source either the
selected JSON value or a `Missing` value saying why, so variants that need it fall
through. It never raises: a slow, failing, huge or malformed answer, or a cache that is
down, only makes that value missing. The returned trace says what each source did and
how long it took, for previews; it never contains header values, and says why a
request failed only coarsely (`refused`, `status 404`, `the request failed`): addresses,
ports and exception text would map the network behind the URL to whoever can preview.
Those go to the log, at WARNING, with the block id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.expressions import (
    Missing,
    MissingValueError,
    Template,
)
from content_sources.http_data_spec import HttpSourceSpec
from content_sources.outbound import AddressRefused, check_spelling, is_refusal
from content_sources.redis_keys import PREFIX

log = logging.getLogger("atopen.http_data")

Outcome = Literal["ok", "cached", "timeout", "error", "refused", "skipped"]
REFUSED = "not an address atopen may fetch from"


def select(document: object, path: Sequence[str]) -> object:
    """The value at a dotted path: object keys, and list indexes written as digits.

    Raises LookupError when a step is not there (no evaluation of any kind).
    """
    value = document
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise LookupError(f"no {'.'.join(path)!r} in the answer (stopped at {step!r})")
    return value


@dataclass(frozen=True, slots=True)
class SourceTrace:
    """What one source did during one open: for the preview's trace and the logs."""

    name: str
    outcome: Outcome
    ms: float
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "outcome": self.outcome, "ms": self.ms, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Fetched:
    """`values` is what rules see as `data`; `trace` is one entry per source, in order."""

    values: dict[str, object]
    trace: tuple[SourceTrace, ...]


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: str | None
    cache_key: str


@dataclass(frozen=True, slots=True)
class _Answer:
    value: object
    outcome: Outcome
    detail: str = ""


class _Failed(Exception):
    """The answer is unusable; the message says why (never holds header values)."""


class _Refused(_Failed):
    """The URL names an address atopen does not fetch from."""


class _Detail(Exception):
    """What the log says beyond a failure's message."""


class HttpData:
    """Fetches blocks' HTTP sources for opens; one per process.

    `secrets` are the configured values header templates read as `secrets.NAME`;
    `session` is the process's HTTP client and `redis` holds the shared cache.
    """

    def __init__(
        self, secrets: Mapping[str, str], session: aiohttp.ClientSession, redis: Redis
    ) -> None:
        self._secrets: Mapping[str, object] = {"secrets": dict(secrets)}
        self._session = session
        self._redis = redis
        self._flights: dict[str, asyncio.Task[_Answer]] = {}

    async def fetch_all(
        self,
        specs: Mapping[str, HttpSourceSpec],
        context: Mapping[str, object],
        deadline: float | None = None,
        *,
        block: str = "",
    ) -> Fetched:
        """Every source's value, by `deadline` (a `time.monotonic()` instant) at the latest.

        A source still pending at the deadline is missing with outcome `timeout`; its
        shared request goes on (bounded by its own timeout) and may fill the cache.
        `block` names the block in the log lines of failed requests.
        """
        started = time.monotonic()
        tasks = {
            name: asyncio.ensure_future(self._one(spec, context, block))
            for name, spec in specs.items()
        }
        try:
            if tasks:
                budget = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait(tasks.values(), timeout=budget)
        finally:
            for task in tasks.values():
                task.cancel()
        values: dict[str, object] = {}
        trace: list[SourceTrace] = []
        for name, task in tasks.items():
            if task.done() and not task.cancelled():
                value, entry = task.result()
            else:
                elapsed = round((time.monotonic() - started) * 1000, 1)
                entry = SourceTrace(name, "timeout", elapsed, "the open's deadline passed")
                value = Missing(hint=f"data.{name}: the open's deadline passed")
            values[name] = value
            trace.append(entry)
            log.debug("data.%s: %s in %.1f ms %s", name, entry.outcome, entry.ms, entry.detail)
        return Fetched(values, tuple(trace))

    async def _one(
        self, spec: HttpSourceSpec, context: Mapping[str, object], block: str
    ) -> tuple[object, SourceTrace]:
        started = time.monotonic()
        try:
            request = self._request(spec, context)
        except MissingValueError as exc:
            answer = _Answer(None, "skipped", f"the request needs a missing value: {exc}")
        except _Refused as exc:
            _warn(block, spec.name, "refused (%s)", exc.__cause__)
            answer = _Answer(None, "refused", REFUSED)
        except _Failed as exc:
            answer = _Answer(None, "error", str(exc))
        else:
            answer = await self._shared(spec, request, block)
        elapsed = round((time.monotonic() - started) * 1000, 1)
        trace = SourceTrace(spec.name, answer.outcome, elapsed, answer.detail)
        if answer.outcome in ("ok", "cached"):
            return answer.value, trace
        return Missing(hint=f"data.{spec.name}: {answer.detail}"), trace

    async def _shared(self, spec: HttpSourceSpec, request: _Request, block: str) -> _Answer:
        """Single flight: the first open to ask resolves; identical concurrent ones wait.

        Shielded, so an open that gives up (its deadline) does not cancel the others' answer.
        """
        key = request.cache_key
        flight = self._flights.get(key)
        if flight is not None:
            answer = await asyncio.shield(flight)
            note = "shared with a concurrent open"
            detail = "; ".join(part for part in (answer.detail, note) if part)
            return _Answer(answer.value, answer.outcome, detail)
        flight = asyncio.ensure_future(self._resolve(spec, request, block))
        self._flights[key] = flight

        def forget(done: asyncio.Task[_Answer]) -> None:
            if self._flights.get(key) is done:
                del self._flights[key]

        flight.add_done_callback(forget)
        return await asyncio.shield(flight)

    def _request(self, spec: HttpSourceSpec, context: Mapping[str, object]) -> _Request:
        url = spec.url.render(context) if isinstance(spec.url, Template) else spec.url
        url = url.strip()
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            hostname = None
        if not hostname or parts.scheme not in ("http", "https") or "@" in parts.netloc:
            raise _Failed("the URL did not render as an http(s) URL without credentials")
        host = hostname.rstrip(".")
        if host not in spec.hosts:
            raise _Failed(f"host {host!r} is not allowed for this source")
        try:
            check_spelling(hostname)  # with its trailing dot: 127.0.0.1. is unusual too
        except AddressRefused as exc:
            raise _Refused(REFUSED) from exc
        body = spec.body.render(context) if isinstance(spec.body, Template) else spec.body
        headers: dict[str, str] = {}
        for name, value in spec.headers.items():
            try:
                text = value.render(self._secrets) if isinstance(value, Template) else value
            except MissingValueError:
                raise _Failed(f"header {name} needs a secret that is not configured") from None
            if "\r" in text or "\n" in text:
                raise _Failed(f"header {name} rendered more than one line")
            headers[name] = text
        if body is not None and not any(n.lower() == "content-type" for n in headers):
            headers["Content-Type"] = "application/json"
        # Header names, not values: values are secrets (and the same for every open).
        material = [spec.method, url, sorted(n.lower() for n in headers), body, spec.select]
        digest = hashlib.sha256(orjson.dumps(material)).hexdigest()
        return _Request(spec.method, url, headers, body, f"{PREFIX}http:{digest}")

    async def _resolve(self, spec: HttpSourceSpec, request: _Request, block: str) -> _Answer:
        """Cache, else the network; an answer, never an exception."""
        value: object = None
        try:
            async with asyncio.timeout(spec.timeout_s):
                if spec.ttl_s:
                    cached = await self._redis.get(request.cache_key)
                    if cached is not None:
                        return _Answer(orjson.loads(cached), "cached")
                value = await self._fetch(spec, request)
        except TimeoutError:
            return _Answer(None, "timeout", f"no answer within {round(spec.timeout_s * 1000)} ms")
        except _Failed as exc:
            cause = "" if exc.__cause__ is None else f" ({exc.__cause__})"
            _warn(block, spec.name, "%s from %s%s", exc, _origin(request.url), cause)
            return _Answer(None, "error", str(exc))
        except orjson.JSONDecodeError:
            return _Answer(None, "error", "the cached answer is not JSON")
        except RedisError:
            return _Answer(None, "error", "the cache is unavailable")
        except Exception as exc:  # a broken source must never break the open
            refused = is_refusal(exc)
            reason = "refused" if refused else "the request failed"
            _warn(block, spec.name, "%s: %s (%s)", _origin(request.url), reason, _explained(exc))
            if refused:
                return _Answer(None, "refused", REFUSED)
            return _Answer(None, "error", "the request failed")
        if spec.ttl_s:
            try:
                await self._redis.set(request.cache_key, orjson.dumps(value), ex=spec.ttl_s)
            except Exception as exc:  # the value is good; only sharing it failed
                log.warning("data.%s: not cached (%s)", spec.name, type(exc).__name__)
        return _Answer(value, "ok")

    async def _fetch(self, spec: HttpSourceSpec, request: _Request) -> object:
        timeout = aiohttp.ClientTimeout(
            total=spec.timeout_s, connect=spec.timeout_s, sock_read=spec.timeout_s
        )
        async with self._session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            if not 200 <= response.status < 300:
                raise _Failed(f"status {response.status}")
            kind = response.content_type
            if kind != "application/json" and not kind.endswith("+json"):
                # The server's own words stay in the log: an answer's headers are not
                # the previewer's to read.
                raise _Failed("the content type is not JSON") from _Detail(repr(kind))
            too_big = _Failed(f"the answer is larger than {spec.max_bytes} bytes")
            if (response.content_length or 0) > spec.max_bytes:
                raise too_big
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > spec.max_bytes:
                    raise too_big
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Failed("the answer is not valid JSON") from None
        try:
            value = select(document, spec.select)
        except LookupError as exc:
            raise _Failed(str(exc)) from None
        if value is None:
            raise _Failed("the selected value is null")
        return value


def _warn(block: str, source: str, message: str, *args: object) -> None:
    """A failed request's whole story, for operators: the trace gives only its outline."""
    log.warning(
        f"block %s, data.%s: {message}",
        block or "?",
        source,
        *args,
        extra={"fields": {"block": block, "source": source}},
    )


def _origin(url: str) -> str:
    """Scheme, host and port, for the log: the path and query may hold recipient data."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _explained(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc.os_error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
