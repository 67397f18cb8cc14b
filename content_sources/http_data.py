"""`data`: live JSON from HTTP APIs a block declares ("connected content").

A block names its sources in its `data` field; rules read the answers as `data.NAME`:

    "data": {"weather": {
        "url": "https://api.example.com/weather?city={{ profile.city | urlencode }}",
        "headers": {"Authorization": "Bearer {{ secrets.WEATHER_TOKEN }}"},
        "timeout_ms": 300, "ttl_s": 600, "max_bytes": 65536, "select": "current.temp_c"}}

Everything that can be checked without a recipient is checked at `PUT`
(`parse_data_sources`). The rules that keep marketers' data where it belongs:

- The host is fixed by the block: it must be written literally in the URL template
  (scheme and host before any `{{`), or listed in `allow_hosts`; the rendered URL is
  checked against that list again, so a template cannot send recipient data elsewhere.
  Redirects are not followed, for the same reason.
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
how long it took, for previews and logs; it never contains header values.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.keys import PREFIX
from server.expressions import (
    ExpressionError,
    Missing,
    MissingValueError,
    Template,
    constant_subscripts,
    is_template,
)

log = logging.getLogger("atopen.http_data")

MAX_SOURCES = 10
MAX_URL_CHARS = 4096
MAX_SELECT_DEPTH = 32
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
# Scheme and authority written out before the first template marker, ended by / ? or #.
_LITERAL_AUTHORITY = re.compile(r"^https?://([^/?#\s]+)[/?#]", re.IGNORECASE)
# Headers the HTTP client owns: setting them by hand would only break the request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_LIMITS = ("timeout_ms", "ttl_s", "max_bytes")
_KEYS = frozenset(("url", "method", "headers", "body", "select", "allow_hosts", *_LIMITS))
_MARKERS = ("{{", "{%", "{#")

Outcome = Literal["ok", "cached", "timeout", "error", "skipped"]


class DataSourceError(ValueError):
    """The `data` field does not validate; `problems` are (field, message) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class HttpSourceSpec:
    """One declared source, validated and compiled."""

    name: str
    url: Template | str
    method: Literal["GET", "POST"]
    headers: Mapping[str, Template | str]
    body: Template | str | None
    timeout_s: float
    ttl_s: int
    max_bytes: int
    select: tuple[str, ...]
    hosts: frozenset[str]  # the hosts the rendered URL may name

    @property
    def names(self) -> frozenset[str]:
        """Context names the URL and body read: the open must gather them first."""
        templates = [t for t in (self.url, self.body) if isinstance(t, Template)]
        return frozenset().union(*(t.names for t in templates))


def parse_data_sources(
    raw: object, path: str = "data", *, secret_names: Collection[str] | None = None
) -> dict[str, HttpSourceSpec]:
    """Validate a block's `data` field; raises DataSourceError naming every bad field.

    With `secret_names` (the secrets this server is configured with), a header that
    reads a secret the server does not have is an error too.
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict) or len(raw) > MAX_SOURCES:
        raise DataSourceError([(path, f"must be an object of at most {MAX_SOURCES} sources")])
    specs: dict[str, HttpSourceSpec] = {}
    for name, value in raw.items():
        where = f"{path}.{name}"
        if not _NAME.match(name):
            problems.append((where, "a source name is 1-64 letters, digits or '_'"))
            continue
        before = len(problems)
        spec = _spec(name, value, where, problems, secret_names)
        if spec is not None and len(problems) == before:
            specs[name] = spec
    if problems:
        raise DataSourceError(problems)
    return specs


def _spec(
    name: str,
    raw: object,
    where: str,
    problems: list[tuple[str, str]],
    secret_names: Collection[str] | None,
) -> HttpSourceSpec | None:
    if not isinstance(raw, dict):
        problems.append((where, "must be an object with at least a `url`"))
        return None
    problems.extend((f"{where}.{key}", "unknown field") for key in sorted(set(raw) - _KEYS))
    method = raw.get("method", "GET")
    if method not in ("GET", "POST"):
        problems.append((f"{where}.method", "must be GET or POST"))
        method = "GET"
    url = _url(raw.get("url"), f"{where}.url", problems)
    hosts = _hosts(raw.get("allow_hosts", []), f"{where}.allow_hosts", problems)
    literal = _literal_host(raw["url"]) if url is not None else None
    if literal is not None:
        hosts.add(literal)
    elif url is not None and not hosts:
        problems.append(
            (
                f"{where}.url",
                "the host must be written literally (https://host/...) before any "
                f"template, or listed in {where}.allow_hosts",
            )
        )
    body = None
    if "body" in raw:
        if method != "POST":
            problems.append((f"{where}.body", "only a POST sends a body"))
        body = _recipient_template(raw["body"], f"{where}.body", problems)
    return HttpSourceSpec(
        name=name,
        url=url or "",
        method=method,
        headers=_headers(raw.get("headers", {}), f"{where}.headers", problems, secret_names),
        body=body,
        timeout_s=_int(raw, "timeout_ms", 10, 30_000, 200, where, problems) / 1000,
        ttl_s=_int(raw, "ttl_s", 0, 7 * 86_400, 300, where, problems),
        max_bytes=_int(raw, "max_bytes", 1, 8 * 1024 * 1024, 256 * 1024, where, problems),
        select=_select(raw.get("select", ""), f"{where}.select", problems),
        hosts=frozenset(hosts),
    )


def _url(raw: object, where: str, problems: list[tuple[str, str]]) -> Template | str | None:
    if not isinstance(raw, str) or not 0 < len(raw) <= MAX_URL_CHARS:
        problems.append(
            (where, f"required: an http(s) URL (template), {MAX_URL_CHARS} chars at most")
        )
        return None
    if not raw.lower().startswith(("http://", "https://")):
        problems.append((where, "must start with http:// or https://"))
        return None
    return _recipient_template(raw, where, problems)


def _recipient_template(
    raw: object, where: str, problems: list[tuple[str, str]]
) -> Template | str | None:
    """A URL or body: sees the recipient's context, never secrets or other sources."""
    if not isinstance(raw, str) or not raw:
        problems.append((where, "must be a non-empty string"))
        return None
    if not is_template(raw):
        return raw
    try:
        template = Template(raw)
    except ExpressionError as exc:
        problems.append((where, str(exc)))
        return None
    if "secrets" in template.names:
        problems.append((where, "cannot read secrets: only header templates see them"))
    if "data" in template.names:
        problems.append((where, "cannot read other data sources"))
    return template


def _literal_host(url: str) -> str | None:
    """The host of a URL template when it is written out before any template marker."""
    cut = min((i for m in _MARKERS if (i := url.find(m)) >= 0), default=-1)
    head = url[:cut] if cut >= 0 else url + "/"
    match = _LITERAL_AUTHORITY.match(head)
    if match is None or "@" in match.group(1):
        return None
    try:
        host = urlsplit("//" + match.group(1)).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def _hosts(raw: object, where: str, problems: list[tuple[str, str]]) -> set[str]:
    if not isinstance(raw, list) or not all(isinstance(h, str) for h in raw):
        problems.append((where, "must be a list of host names"))
        return set()
    hosts = {h.lower().rstrip(".") for h in raw}
    for host in sorted(h for h in hosts if not _HOST.match(h)):
        problems.append((where, f"{host!r} is not a host name (no scheme, port or path)"))
    return hosts


def _headers(
    raw: object,
    where: str,
    problems: list[tuple[str, str]],
    secret_names: Collection[str] | None,
) -> dict[str, Template | str]:
    if not isinstance(raw, dict):
        problems.append((where, "must be an object of header names to strings"))
        return {}
    headers: dict[str, Template | str] = {}
    for name, value in raw.items():
        field = f"{where}.{name}"
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            problems.append((field, "not a header name atopen may set"))
            continue
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            problems.append((field, "must be a one-line string"))
            continue
        if not is_template(value):
            headers[name] = value
            continue
        try:
            template = Template(value)
        except ExpressionError as exc:
            problems.append((field, str(exc)))
            continue
        if template.names - {"secrets"}:
            problems.append(
                (field, "header templates see only `secrets`; put recipient data in the URL")
            )
            continue
        unknown = constant_subscripts(value, "secrets") - set(secret_names or ())
        if secret_names is not None and unknown:
            missing = ", ".join(f"ATOPEN_SECRET_{n}" for n in sorted(unknown))
            problems.append((field, f"reads a secret this server does not have ({missing})"))
            continue
        headers[name] = template
    return headers


def _int(
    raw: Mapping[str, object],
    key: str,
    lo: int,
    hi: int,
    default: int,
    where: str,
    problems: list[tuple[str, str]],
) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        problems.append((f"{where}.{key}", f"must be an integer from {lo} to {hi}"))
        return default
    return value


def _select(raw: object, where: str, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    if not isinstance(raw, str) or len(raw) > 256:
        problems.append((where, "must be a dotted path such as `items.0.name`"))
        return ()
    if not raw:
        return ()
    steps = tuple(raw.split("."))
    if any(not step.strip() for step in steps) or len(steps) > MAX_SELECT_DEPTH:
        problems.append(
            (where, f"must be a dotted path of 1 to {MAX_SELECT_DEPTH} non-empty keys or indexes")
        )
        return ()
    return steps


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
    ) -> Fetched:
        """Every source's value, by `deadline` (a `time.monotonic()` instant) at the latest.

        A source still pending at the deadline is missing with outcome `timeout`; its
        shared request goes on (bounded by its own timeout) and may fill the cache.
        """
        started = time.monotonic()
        tasks = {
            name: asyncio.ensure_future(self._one(spec, context)) for name, spec in specs.items()
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
        self, spec: HttpSourceSpec, context: Mapping[str, object]
    ) -> tuple[object, SourceTrace]:
        started = time.monotonic()
        try:
            request = self._request(spec, context)
        except MissingValueError as exc:
            answer = _Answer(None, "skipped", f"the request needs a missing value: {exc}")
        except _Failed as exc:
            answer = _Answer(None, "error", str(exc))
        else:
            answer = await self._shared(spec, request)
        elapsed = round((time.monotonic() - started) * 1000, 1)
        trace = SourceTrace(spec.name, answer.outcome, elapsed, answer.detail)
        if answer.outcome in ("ok", "cached"):
            return answer.value, trace
        return Missing(hint=f"data.{spec.name}: {answer.detail}"), trace

    async def _shared(self, spec: HttpSourceSpec, request: _Request) -> _Answer:
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
        flight = asyncio.ensure_future(self._resolve(spec, request))
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

    async def _resolve(self, spec: HttpSourceSpec, request: _Request) -> _Answer:
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
            return _Answer(None, "error", str(exc))
        except orjson.JSONDecodeError:
            return _Answer(None, "error", "the cached answer is not JSON")
        except RedisError:
            return _Answer(None, "error", "the cache is unavailable")
        except Exception as exc:  # a broken source must never break the open
            return _Answer(None, "error", f"request failed ({type(exc).__name__})")
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
                raise _Failed(f"HTTP {response.status}")
            kind = response.content_type
            if kind != "application/json" and not kind.endswith("+json"):
                raise _Failed(f"content type {kind!r} is not JSON")
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
