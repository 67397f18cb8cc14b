"""Remote images: every limit against a real local HTTP server, the cache, and the hand-off.

The server here is plain http on loopback, so these fetchers allow both (production
allows plain http never, loopback only when `ATOPEN_FETCH_ALLOW` lists it); one test
checks that both are refused when not allowed.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from content_sources.outbound import parse_allow
from content_sources.rule_context import RuleContext
from renderers.fields import FieldError
from renderers.layers import LAYER_KINDS
from renderers.layers.image import ImageLayer
from renderers.plan import RenderPlan
from renderers.render import render
from renderers.resources import Asset, LocalResources, builtin_fonts
from server.blocks.compiling import Block, compile_block
from server.blocks.experiments import EVERYTHING
from server.blocks.selection import Choice
from server.opens import MAX_DECISIONS
from server.opens.decide import decide
from server.opens.remote_images import (
    OpenResources,
    RemoteImageError,
    RemoteImageLimits,
    RemoteImages,
)

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
LOCAL = RemoteImageLimits(
    connect_timeout_s=1.0,
    read_timeout_s=0.3,
    max_bytes=50_000,
    max_pixels=1_000_000,
    allow_http=True,
    fetch_allow=parse_allow("127.0.0.1/32"),
)


def png(size: tuple[int, int] = (40, 20), colour: str = "#ff0000") -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste("#0000ff", (size[0] // 2, 0, size[0], size[1]))
    image.save(out, format="PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


class Origin:
    """A local image server that counts what it is asked for."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_get("/{name}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "ok.png":
            return web.Response(body=png(), content_type="image/png")
        if name == "slow.png":
            await asyncio.sleep(2)
            return web.Response(body=png(), content_type="image/png")
        if name == "drip.png":
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            for _ in range(20):
                await response.write(b"\x89")
                await asyncio.sleep(0.2)
            return response
        if name == "huge.png":
            return web.Response(body=b"\x00" * 60_000, content_type="image/png")
        if name == "stream.png":
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(10):
                await response.write(b"\x00" * 10_000)
            return response
        if name == "page.png":
            return web.Response(text="<html>not an image</html>", content_type="text/html")
        if name == "bomb.png":
            return web.Response(body=png_header_only(30_000, 30_000), content_type="image/png")
        if name == "big.png":
            return web.Response(body=png_header_only(2_000, 2_000), content_type="image/png")
        if name == "broken.png":
            return web.Response(body=png()[:60], content_type="image/png")
        if name == "moved.png":
            raise web.HTTPFound("/ok.png")
        if name == "loop.png":
            raise web.HTTPFound("/loop.png")
        raise web.HTTPNotFound()


@pytest.fixture
async def origin(aiohttp_server: ServerFactory) -> tuple[Origin, str]:
    served = Origin()
    server = await aiohttp_server(served.app)
    return served, f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def images() -> Any:
    fetcher = RemoteImages(LOCAL)
    yield fetcher
    await fetcher.close()


async def test_an_image_is_fetched_decoded_and_cached(
    origin: tuple[Origin, str], images: RemoteImages
) -> None:
    served, base = origin
    asset = await images.fetch(f"{base}/ok.png")
    assert asset.name == f"{base}/ok.png"
    assert asset.image.mode == "RGBA"
    assert asset.image.size == (40, 20)
    assert asset.image.getpixel((0, 0)) == (255, 0, 0, 255)
    assert await images.fetch(f"{base}/ok.png") is asset
    assert served.hits["ok.png"] == 1


async def test_concurrent_requests_share_one_fetch(
    origin: tuple[Origin, str], images: RemoteImages
) -> None:
    served, base = origin
    assets = await asyncio.gather(*(images.fetch(f"{base}/ok.png") for _ in range(5)))
    assert len({id(asset) for asset in assets}) == 1
    assert served.hits["ok.png"] == 1


async def test_the_cache_expires_after_its_ttl(origin: tuple[Origin, str]) -> None:
    served, base = origin
    clock = [0.0]
    fetcher = RemoteImages(LOCAL, clock=lambda: clock[0])
    try:
        await fetcher.fetch(f"{base}/ok.png")
        clock[0] = LOCAL.ttl_s - 1
        await fetcher.fetch(f"{base}/ok.png")
        assert served.hits["ok.png"] == 1
        clock[0] = LOCAL.ttl_s + 1
        await fetcher.fetch(f"{base}/ok.png")
        assert served.hits["ok.png"] == 2
    finally:
        await fetcher.close()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("slow.png", "timed out"),
        ("drip.png", "timed out"),
        ("huge.png", "larger than 50,000 bytes"),
        ("stream.png", "larger than 50,000 bytes"),
        ("page.png", "text/html is not an image"),
        ("bomb.png", "megapixels"),
        ("big.png", "more than 1 megapixels"),
        ("broken.png", "cannot be decoded"),
        ("missing.png", "HTTP 404"),
        ("loop.png", "redirects"),
    ],
)
async def test_every_limit_is_enforced(
    origin: tuple[Origin, str], images: RemoteImages, name: str, reason: str
) -> None:
    _, base = origin
    with pytest.raises(RemoteImageError, match=reason):
        await images.fetch(f"{base}/{name}")


async def test_a_failure_is_remembered_briefly(
    origin: tuple[Origin, str], images: RemoteImages
) -> None:
    served, base = origin
    for _ in range(3):
        with pytest.raises(RemoteImageError, match="404"):
            await images.fetch(f"{base}/missing.png")
    assert served.hits["missing.png"] == 1


async def test_redirects_are_followed(origin: tuple[Origin, str], images: RemoteImages) -> None:
    served, base = origin
    asset = await images.fetch(f"{base}/moved.png")
    assert asset.image.size == (40, 20)
    assert served.hits["ok.png"] == 1


async def test_private_addresses_and_plain_http_are_refused_by_default(
    origin: tuple[Origin, str],
) -> None:
    _, base = origin
    strict = RemoteImages(RemoteImageLimits())
    try:
        with pytest.raises(RemoteImageError, match="only https"):
            await strict.fetch(f"{base}/ok.png")
        with pytest.raises(RemoteImageError, match="refused"):
            await strict.fetch(f"https://127.0.0.1:{base.rsplit(':', 1)[1]}/ok.png")
        with pytest.raises(RemoteImageError, match="refused"):
            await strict.fetch(f"https://localhost:{base.rsplit(':', 1)[1]}/ok.png")
    finally:
        await strict.close()


@pytest.mark.slow
async def test_a_fetch_outlives_the_open_that_gave_up(
    origin: tuple[Origin, str], images: RemoteImages
) -> None:
    served, base = origin
    patient = RemoteImages(replace(LOCAL, read_timeout_s=5.0))
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await patient.fetch(f"{base}/slow.png")
        asset = await patient.fetch(f"{base}/slow.png")  # joins the fetch already running
        assert asset.image.size == (40, 20)
        assert served.hits["slow.png"] == 1
    finally:
        await patient.close()


# The hand-off: choosing a variant with remote images


class Canned(RemoteImages):
    """Remote images from a dict instead of the network (https URLs, no server needed)."""

    def __init__(self, images: Mapping[str, Asset | RemoteImageError]) -> None:
        super().__init__()
        self.images = images
        self.asked: list[str] = []

    async def _fetch(self, url: str) -> Asset:
        self.asked.append(url)
        found = self.images[url]
        if isinstance(found, RemoteImageError):
            raise found
        return found


def red_blue() -> Asset:
    image = Image.open(io.BytesIO(png((100, 50)))).convert("RGBA")
    return Asset("https://cdn.example.com/shoe.png", "digest", image)


def block_of(*variants: Sequence[Mapping[str, object]]) -> Block:
    """A block whose variants have these layers, in order, and a plain default."""
    definition = {
        "width": 100,
        "height": 100,
        "variants": [
            {"name": f"v{index}", "layers": layers, "link": "https://shop.example.com/"}
            for index, layers in enumerate(variants)
        ],
        "default": {"layers": FALLBACK, "link": "https://shop.example.com/"},
    }
    return compile_block("b", definition, 1, LocalResources([], builtin_fonts()))


async def decide_fetching(block: Block, fetcher: RemoteImages) -> Choice:
    """An open's decision as the server makes it: decide, fetch what the decision needs,
    and decide again, until nothing is missing or the last decision."""
    gathered: dict[str, Asset | RemoteImageError] = {}
    resources = LocalResources([], builtin_fonts())
    for attempt in range(1, MAX_DECISIONS + 1):
        decision = decide(
            block, RuleContext(), resources, gathered, EVERYTHING, final=attempt == MAX_DECISIONS
        )
        if decision.needs is None:
            return decision.choice
        gathered.update(await fetcher.fetch_many(decision.needs.images))
    raise AssertionError("the last decision is final")


IMAGE = {"type": "image", "box": [0, 0, 100, 100], "fit": "cover", "radius": 30}
FALLBACK = [{"type": "fill", "color": "#00ff00"}]


async def test_the_chosen_variant_gets_its_remote_image_drawn_rounded_and_cropped() -> None:
    url = "https://cdn.example.com/shoe.png"
    fetcher = Canned({url: red_blue()})
    choice = await decide_fetching(block_of([{**IMAGE, "src": url}]), fetcher)
    assert choice.variant == "v0"
    assert fetcher.asked == [url]
    plan = RenderPlan(100, 100, 1, "png", choice.layers)
    image = Image.open(io.BytesIO(render(plan))).convert("RGBA")
    assert image.getpixel((0, 0))[3] == 0  # type: ignore[index]  # rounded corner
    assert image.getpixel((5, 50)) == (255, 0, 0, 255)  # cover: the red half fills the left
    assert image.getpixel((95, 50)) == (0, 0, 255, 255)


async def test_a_failed_remote_image_makes_its_variant_fall_through() -> None:
    url = "https://cdn.example.com/gone.png"
    fetcher = Canned({url: RemoteImageError(f"{url}: HTTP 404")})
    choice = await decide_fetching(block_of([{**IMAGE, "src": url}], FALLBACK), fetcher)
    assert choice.variant == "v1"
    assert choice.layers[0].kind == "fill"


async def test_every_url_of_a_variant_is_fetched_in_one_pass() -> None:
    urls = [f"https://cdn.example.com/{n}.png" for n in range(3)]
    fetcher = Canned({url: red_blue() for url in urls})
    choice = await decide_fetching(block_of([{**IMAGE, "src": url} for url in urls]), fetcher)
    assert choice.variant == "v0"
    assert sorted(fetcher.asked) == urls
    images = [layer for layer in choice.layers if isinstance(layer, ImageLayer)]
    assert [image.src.digest for image in images] == ["digest"] * len(choice.layers)


async def test_the_next_variant_s_images_are_fetched_when_the_first_s_fail() -> None:
    gone, shoe = "https://cdn.example.com/gone.png", "https://cdn.example.com/shoe.png"
    fetcher = Canned({gone: RemoteImageError(f"{gone}: HTTP 404"), shoe: red_blue()})
    block = block_of([{**IMAGE, "src": gone}], [{**IMAGE, "src": shoe}])
    choice = await decide_fetching(block, fetcher)
    assert choice.variant == "v1"
    assert fetcher.asked == [gone, shoe]


def test_open_resources_check_urls_and_pass_the_rest_through() -> None:
    resources = OpenResources(LocalResources([], builtin_fonts()), {})
    assert resources.font("sans").name == "sans"
    with pytest.raises(FieldError, match="https"):
        resources.asset("http://cdn.example.com/a.png")
    with pytest.raises(FieldError, match="unknown asset"):
        resources.asset("missing.png")
    resources.asset("https://cdn.example.com/a.png")
    assert resources.pending == {"https://cdn.example.com/a.png"}
    final = OpenResources(LocalResources([], builtin_fonts()), {}, final=True)
    with pytest.raises(FieldError, match="not fetched"):
        final.asset("https://cdn.example.com/a.png")


def test_an_image_source_url_is_resolved_at_open_time() -> None:
    source = next(f for f in LAYER_KINDS["image"].fields if f.name == "src")
    assert source.at_open is not None
    assert source.at_open("https://cdn.example.com/a.png")
    assert not source.at_open("logo.png")
    with pytest.raises(FieldError, match="https"):
        source.at_open("http://cdn.example.com/a.png")
    with pytest.raises(FieldError, match="credentials"):
        source.at_open("https://user:pw@cdn.example.com/a.png")
    with pytest.raises(FieldError, match="default"):
        LocalResources([], builtin_fonts()).asset("https://cdn.example.com/a.png")
