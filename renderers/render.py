"""The render pipeline: a plan in, encoded image bytes out.

Synchronous and pure (no network, no clock but the deadline, no shared state beyond
caches), so the server runs it in a worker thread. An asyncio timeout cannot stop a
running thread, so the renderer checks the deadline itself between layers.

The plan's first `static_prefix` layers look the same for every recipient (a
background, a logo): their composed canvas is cached and copied, and only the layers
after them are drawn. A GIF with an animated countdown draws the layers below it once,
those above it once, and lets `renderers.animation` make the frames.
"""

from __future__ import annotations

import time
from datetime import datetime

from PIL import Image

from renderers.animation import animate_gif
from renderers.encode import encode
from renderers.layers import LAYER_KINDS
from renderers.layers.countdown import CountdownLayer, countdown_face
from renderers.picture_cache import PictureCache
from renderers.plan import Layer, RenderPlan

_TRANSPARENT = (0, 0, 0, 0)
_PREFIXES = PictureCache(max_bytes=128 * 1024 * 1024)


class RenderDeadlineExceeded(TimeoutError):
    """The deadline passed before the image was finished."""


def render(plan: RenderPlan, *, deadline: float | None = None) -> bytes:
    """Draw `plan` and encode it; `deadline` is a `time.monotonic()` value to give up at.

    Raises RenderDeadlineExceeded, ByteBudgetError (`max_bytes` cannot be met) and
    ValueError (a countdown without the plan's `now`).
    """
    canvas = _static_canvas(plan, deadline)
    rest = plan.layers[plan.static_prefix :]
    animated = _animated(plan, rest)
    if animated is None:
        _draw(canvas, rest, plan, deadline)
        _check(deadline)
        return encode(canvas, plan.format, max_bytes=plan.max_bytes)
    _draw(canvas, rest[:animated], plan, deadline)
    above = None
    if rest[animated + 1 :]:
        above = Image.new("RGBA", canvas.size, _TRANSPARENT)
        _draw(above, rest[animated + 1 :], plan, deadline)
    countdown = rest[animated]
    timeline = countdown_face(canvas, countdown, plan.dpr, plan.now, frames=None)
    _check(deadline)
    return animate_gif(canvas, timeline, above, max_bytes=plan.max_bytes)


def _static_canvas(plan: RenderPlan, deadline: float | None) -> Image.Image:
    """A fresh canvas with the plan's static layers drawn: from the cache when it has them."""
    size = (plan.width * plan.dpr, plan.height * plan.dpr)
    if plan.static_prefix == 0:
        return Image.new("RGBA", size, _TRANSPARENT)
    prefix = plan.layers[: plan.static_prefix]
    if any(LAYER_KINDS[layer.kind].needs_clock for layer in prefix):
        raise ValueError("a layer that needs the clock cannot be in the static prefix")
    key = (size, plan.dpr, prefix)
    cached = _PREFIXES.get(key)
    if cached is None:
        cached = Image.new("RGBA", size, _TRANSPARENT)
        _draw(cached, prefix, plan, deadline)
        _PREFIXES.put(key, cached)
    return cached.copy()


def _animated(plan: RenderPlan, layers: tuple[Layer, ...]) -> int | None:
    """The index of the countdown that animates this GIF, if any (the first of them)."""
    if plan.format != "gif":
        return None
    for index, layer in enumerate(layers):
        if isinstance(layer, CountdownLayer) and layer.frames > 1:
            return index
    return None


def _draw(
    canvas: Image.Image, layers: tuple[Layer, ...], plan: RenderPlan, deadline: float | None
) -> None:
    now: datetime | None = plan.now
    for layer in layers:
        _check(deadline)
        LAYER_KINDS[layer.kind].draw(canvas, layer, plan.dpr, now)


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise RenderDeadlineExceeded("the image was not finished before its deadline")
