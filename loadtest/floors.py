"""The floors the benchmark compares atopen against, measured in the same run.

- `serve_bytes`: a bare aiohttp handler answering the same bytes, with the same number
  of processes sharing the port: what serving a cached image could cost at best.
- `pillow_renders_per_s`: the same personalized images drawn by a minimal Pillow
  script, one process per core: what rendering could cost at best.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import time
from pathlib import Path

from aiohttp import web
from PIL import Image, ImageDraw, ImageFont

from renderers.resources import builtin_fonts


def serve_bytes(port: int, body_path: str) -> None:
    """Serve `body_path`'s bytes on `port` (SO_REUSEPORT: run it once per worker)."""
    body = Path(body_path).read_bytes()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(
        app, host="127.0.0.1", port=port, reuse_port=True, print=None, access_log=None, loop=loop
    )


def draw_greeting(font: ImageFont.FreeTypeFont, name: str) -> bytes:
    """What the benchmark's personalized block draws, with nothing but Pillow."""
    image = Image.new("RGBA", (400, 100), (255, 255, 255, 255))
    ImageDraw.Draw(image).text((10, 10), f"Hello {name}", font=font, fill=(0, 0, 0, 255))
    out = io.BytesIO()
    image.convert("RGB").save(out, "PNG", compress_level=6)
    return out.getvalue()


def _render_for(seconds: float, counter: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    font = ImageFont.truetype(str(builtin_fonts()["sans"]), 30)
    end = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < end:
        draw_greeting(font, f"Reader{done}")
        done += 1
    with counter.get_lock():
        counter.value += done


def pillow_renders_per_s(seconds: float, processes: int) -> float:
    """Images per second drawn by `processes` minimal Pillow loops."""
    counter = multiprocessing.Value("i", 0)
    workers = [
        multiprocessing.Process(target=_render_for, args=(seconds, counter))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return float(counter.value) / seconds


if __name__ == "__main__":
    serve_bytes(int(sys.argv[1]), sys.argv[2])
    os._exit(0)
