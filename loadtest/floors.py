"""The floors the benchmark compares atopen against, measured in the same run.

- `serve_bytes`: a bare aiohttp handler answering the same bytes, with the same number
  of processes sharing the port: what serving a cached image could cost at best.
- `pillow_floor`: the same personalized images drawn by a minimal Pillow script, one
  process per core: what rendering could cost at best, in images per second and CPU.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
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


def _render_for(seconds: float, drawn: Synchronized[int], cpu_s: Synchronized[float]) -> None:
    font = ImageFont.truetype(str(builtin_fonts()["sans"]), 30)
    started_cpu = time.process_time()
    end = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < end:
        draw_greeting(font, f"Reader{done}")
        done += 1
    with drawn.get_lock():
        drawn.value += done
    with cpu_s.get_lock():
        cpu_s.value += time.process_time() - started_cpu


@dataclass(frozen=True)
class PillowFloor:
    rate: float  # images per second, all processes together
    cpu_us_per_image: float


def pillow_floor(seconds: float, processes: int) -> PillowFloor:
    """What `processes` minimal Pillow loops draw in `seconds`, and the CPU each image takes."""
    drawn: Synchronized[int] = multiprocessing.Value("i", 0)
    cpu_s: Synchronized[float] = multiprocessing.Value("d", 0.0)
    workers = [
        multiprocessing.Process(target=_render_for, args=(seconds, drawn, cpu_s))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return PillowFloor(drawn.value / seconds, cpu_s.value / max(drawn.value, 1) * 1e6)


if __name__ == "__main__":
    serve_bytes(int(sys.argv[1]), sys.argv[2])
    os._exit(0)
