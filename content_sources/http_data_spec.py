"""Declaring live HTTP data: validating a block's `data` field (see `http_data`).

Everything about a source that can be checked without a recipient is checked here, when
a block is stored: the URL's host is fixed by the block (written literally, or listed in
`allow_hosts`), secrets are read only by header templates, limits are in range, and every
template compiles. Problems name their field (`data.weather.timeout_ms`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from content_sources.expressions import ExpressionError, Template, constant_subscripts, is_template

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
