"""The render pipeline: a plan in, encoded image bytes out.

Synchronous and pure (no network, no clock but the deadline, no shared state beyond
caches), so the server runs it in a worker thread. An asyncio timeout cannot stop a
running thread, so the renderer checks the deadline itself between layers.

The plan's first `static_prefix` layers look the same for every recipient (a
background, a logo): their composed canvas is cached and copied, and only the layers
after them are drawn; a PNG then compresses again only the rows those layers changed
(`renderers.static_png`). A GIF with an animated countdown draws the layers below it once,
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
from renderers.static_png import StaticPicture

_TRANSPARENT = (0, 0, 0, 0)
_PREFIXES = PictureCache[StaticPicture](max_bytes=128 * 1024 * 1024, size_of=lambda s: s.nbytes)


class RenderDeadlineExceeded(TimeoutError):
    """The deadline passed before the image was finished."""


def render(plan: RenderPlan, *, deadline: float | None = None) -> bytes:
    """Draw `plan` and encode it; `deadline` is a `time.monotonic()` value to give up at.

    Raises RenderDeadlineExceeded, ByteBudgetError (`max_bytes` cannot be met) and
    ValueError (a countdown without the plan's `now`).
    """
    static = _static_picture(plan, deadline)
    size = (plan.width * plan.dpr, plan.height * plan.dpr)
    canvas = static.canvas.copy() if static else Image.new("RGBA", size, _TRANSPARENT)
    rest = plan.layers[plan.static_prefix :]
    animated = _animated(plan, rest)
    if animated is None:
        _draw(canvas, rest, plan, deadline)
        _check(deadline)
        if static is not None and plan.format == "png":
            data = static.png(canvas)
            if data is not None and (plan.max_bytes is None or len(data) <= plan.max_bytes):
                return data
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


def _static_picture(plan: RenderPlan, deadline: float | None) -> StaticPicture | None:
    """The plan's static layers drawn (from the cache when it has them); None if it has none."""
    if plan.static_prefix == 0:
        return None
    size = (plan.width * plan.dpr, plan.height * plan.dpr)
    prefix = plan.layers[: plan.static_prefix]
    if any(LAYER_KINDS[layer.kind].needs_clock for layer in prefix):
        raise ValueError("a layer that needs the clock cannot be in the static prefix")
    key = (size, plan.dpr, prefix)
    cached = _PREFIXES.get(key)
    if cached is None:
        canvas = Image.new("RGBA", size, _TRANSPARENT)
        _draw(canvas, prefix, plan, deadline)
        cached = StaticPicture(canvas)
        _PREFIXES.put(key, cached)
    return cached


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
