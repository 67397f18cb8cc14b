"""Images from https URLs, fetched when an email is opened, for image layers whose `src` is one.

Fetching is I/O, so it happens before rendering, like every other data source: an
open's decision is made with `OpenResources`, which collects the URLs the chosen variant
needs; the open fetches them concurrently and decides again with the decoded images at
hand (`server/opens/`). A URL that cannot be used (timeout, too large, not an image, a decompression
bomb, an error status) makes its variant fall through to the next one, like a missing
value; the default never needs one (it must render without the network).

Every fetch is bounded: connect and read timeouts and a total one, a byte limit (the
declared length is checked before reading, the body while reading), the content type,
and the pixel count, checked from the image header before any pixel is decoded. Only
public addresses are fetched, and those in `ATOPEN_FETCH_ALLOW` (the rule is
`content_sources.outbound`'s, shared with live data), on every hop of a redirect, so a
URL from recipient data cannot reach the service's own network.

Why a fetch failed is logged; the error itself says only `refused`, `timed out` or
`connection failed`, since it reaches previews, which must not map the network.

Images are cached by URL for a TTL, failures for a shorter one (a broken URL is not
hammered on every open), and concurrent requests for one URL share one fetch, which
runs to its end even when the open that started it has given up: the next open finds
the image in the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from PIL import Image

from content_sources.outbound import IPNetwork, check_host, guarded_connector, is_refusal
from renderers.fields import FieldError, Resources, is_remote, remote_url
from renderers.fonts import FontStack
from renderers.resources import Asset, decode_image

CONTENT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_REDIRECTS = 3
_CHUNK_BYTES = 64 * 1024
_PENDING = Image.new("RGBA", (1, 1), (0, 0, 0, 0))

log = logging.getLogger("atopen.remote_images")


class RemoteImageError(Exception):
    """A remote image could not be fetched or used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class RemoteImageLimits:
    """What one fetch may cost. The server fills these from its settings."""

    connect_timeout_s: float = 1.0
    read_timeout_s: float = 2.0
    max_bytes: int = 5 * 1024 * 1024
    max_pixels: int = 20_000_000
    ttl_s: float = 300.0
    failure_ttl_s: float = 30.0
    cache_bytes: int = 64 * 1024 * 1024
    allow_http: bool = False  # tests only: plain http to a local server
    # Networks reachable besides public addresses: `ATOPEN_FETCH_ALLOW`.
    fetch_allow: tuple[IPNetwork, ...] = ()


class RemoteImages:
    """Fetches, decodes and caches remote images. Create and close it inside the event loop."""

    def __init__(
        self,
        limits: RemoteImageLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """`resolver` resolves names before the address check (the system's by default)."""
        self.limits = limits or RemoteImageLimits()
        self._clock = clock
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._cache: OrderedDict[str, tuple[float, Asset | RemoteImageError]] = OrderedDict()
        self._cached_bytes = 0
        self._inflight: dict[str, asyncio.Task[Asset]] = {}

    async def fetch(self, url: str) -> Asset:
        """The decoded image at `url`, from the cache or fetched once for all who ask now."""
        cached = self._cached(url)
        if cached is not None:
            if isinstance(cached, RemoteImageError):
                raise cached
            return cached
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._fetch_and_keep(url), name=f"remote-image {url}")
            self._inflight[url] = task
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        # Shielded: an open that gives up (its deadline) leaves the fetch to fill the cache.
        return await asyncio.shield(task)

    async def fetch_many(self, urls: Iterable[str]) -> dict[str, Asset | RemoteImageError]:
        """Each URL's image or the reason it cannot be used, fetched concurrently."""
        ordered = list(dict.fromkeys(urls))
        results = await asyncio.gather(
            *(self.fetch(url) for url in ordered), return_exceptions=True
        )
        outcome: dict[str, Asset | RemoteImageError] = {}
        for url, result in zip(ordered, results, strict=True):
            if isinstance(result, Asset | RemoteImageError):
                outcome[url] = result
            elif isinstance(result, BaseException):
                raise result
        return outcome

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch_and_keep(self, url: str) -> Asset:
        try:
            asset = await self._fetch(url)
        except RemoteImageError as exc:
            self._keep(url, exc, self.limits.failure_ttl_s)
            raise
        self._keep(url, asset, self.limits.ttl_s)
        return asset

    async def _fetch(self, url: str) -> Asset:
        limits = self.limits
        timeout = aiohttp.ClientTimeout(
            total=limits.connect_timeout_s + limits.read_timeout_s,
            sock_connect=limits.connect_timeout_s,
            sock_read=limits.read_timeout_s,
        )
        target = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                self._check_target(target)
                async with self._client().get(
                    target, timeout=timeout, allow_redirects=False, headers={"Accept": "image/*"}
                ) as response:
                    if (
                        response.status in (301, 302, 303, 307, 308)
                        and "Location" in response.headers
                    ):
                        target = urljoin(target, response.headers["Location"])
                        continue
                    data = await self._body(url, response)
                    break
            else:
                raise RemoteImageError(f"{url}: more than {MAX_REDIRECTS} redirects")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = _reason(exc)
            # The host, not the URL: a templated URL can carry recipient data.
            host = urlsplit(target).netloc.rpartition("@")[2]
            log.warning("remote image from %s: %s (%s)", host, reason, _detail(exc))
            raise RemoteImageError(f"{url}: {reason}") from None
        try:
            image = await asyncio.to_thread(decode_image, url, data, max_pixels=self._max_pixels())
        except FieldError as exc:
            raise RemoteImageError(str(exc)) from None
        return Asset(url, hashlib.sha256(data).hexdigest(), image)

    async def _body(self, url: str, response: aiohttp.ClientResponse) -> bytes:
        limit = self.limits.max_bytes
        if response.status != 200:
            raise RemoteImageError(f"{url}: HTTP {response.status}")
        if response.content_type not in CONTENT_TYPES:
            raise RemoteImageError(
                f"{url}: {response.content_type or 'no content type'} is not an image"
            )
        if response.content_length is not None and response.content_length > limit:
            raise RemoteImageError(f"{url}: larger than {limit:,} bytes")
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise RemoteImageError(f"{url}: larger than {limit:,} bytes")
        return bytes(body)

    def _check_target(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:  # a redirect to an unbalanced IPv6 bracket, say
            raise RemoteImageError(f"{url}: not a valid URL") from None
        if parts.scheme not in (("https", "http") if self.limits.allow_http else ("https",)):
            raise RemoteImageError(f"{url}: only https URLs are fetched")
        # A literal is refused here, before any request; the connector checks it again,
        # and checks every address a name resolves to.
        check_host(host, self.limits.fetch_allow)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = guarded_connector(
                self.limits.fetch_allow, resolver=self._resolver, limit=64, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    def _max_pixels(self) -> int:
        pillow = Image.MAX_IMAGE_PIXELS
        return self.limits.max_pixels if pillow is None else min(self.limits.max_pixels, pillow)

    def _cached(self, url: str) -> Asset | RemoteImageError | None:
        entry = self._cache.get(url)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            self._drop(url)
            return None
        self._cache.move_to_end(url)
        return value

    def _keep(self, url: str, value: Asset | RemoteImageError, ttl_s: float) -> None:
        size = _size(value)
        if size > self.limits.cache_bytes:
            return
        self._drop(url)
        self._cache[url] = (self._clock() + ttl_s, value)
        self._cached_bytes += size
        while self._cached_bytes > self.limits.cache_bytes:
            self._drop(next(iter(self._cache)))

    def _drop(self, url: str) -> None:
        entry = self._cache.pop(url, None)
        if entry is not None:
            self._cached_bytes -= _size(entry[1])


class OpenResources:
    """The server's resources for one open, plus the remote images fetched for it so far.

    A URL not fetched yet is noted in `pending` and stands in as an empty image, so that
    one pass finds every URL the variant needs; `final` passes refuse it instead.
    """

    def __init__(
        self,
        base: Resources,
        fetched: Mapping[str, Asset | RemoteImageError],
        *,
        final: bool = False,
    ) -> None:
        self._base = base
        self._fetched = fetched
        self._final = final
        self.pending: set[str] = set()

    def font(self, name: str) -> FontStack:
        return self._base.font(name)

    def asset(self, name: str) -> Asset:
        if not is_remote(name):
            return self._base.asset(name)
        url = remote_url(name)
        fetched = self._fetched.get(url)
        if isinstance(fetched, RemoteImageError):
            raise FieldError(str(fetched))
        if fetched is not None:
            return fetched
        self.pending.add(url)
        if self._final:
            raise FieldError(f"{url}: not fetched in time")
        return Asset(url, "pending", _PENDING)


def _reason(exc: Exception) -> str:
    """What the error may say: previews show it, and addresses or ports would map the
    network behind the URL."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if is_refusal(exc):
        return "refused: not an address atopen may fetch from"
    return "connection failed"


def _detail(exc: Exception) -> str:
    """For the log: the whole story, addresses included."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc.os_error}"
    return f"{type(exc).__name__}: {exc}"


def _size(value: Asset | RemoteImageError) -> int:
    if isinstance(value, RemoteImageError):
        return 256
    return value.image.width * value.image.height * 4
