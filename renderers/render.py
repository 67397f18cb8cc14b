"""The render pipeline: a plan in, encoded image bytes out.

Synchronous and pure (no network, no clock but the deadline, no shared state beyond
caches), so the server runs it in a worker thread. An asyncio timeout cannot stop a
running thread, so the renderer checks the deadline itself between layers.

The plan's first `static_prefix` layers look the same for every recipient (a
background, a logo): their composed canvas is cached and copied, and only the layers
after them are drawn; a PNG then compresses again only the rows those layers changed
(`renderers.static_png`). A GIF with animated layers (countdowns) draws the layers below
and above each once, and lets `renderers.animation` make the frames.
"""

from __future__ import annotations

import time
from datetime import datetime

from PIL import Image

from renderers.animation import Placed, animate_gif
from renderers.encode import encode
from renderers.layers import LAYER_KINDS, frames, needs_clock
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
    if animated:
        return _animate(canvas, rest, animated, plan, deadline)
    _draw(canvas, rest, plan, deadline)
    _check(deadline)
    if static is not None and plan.format == "png":
        data = static.png(canvas)
        if data is not None and (plan.max_bytes is None or len(data) <= plan.max_bytes):
            return data
    return encode(canvas, plan.format, max_bytes=plan.max_bytes)


def _animate(
    canvas: Image.Image,
    layers: tuple[Layer, ...],
    animated: list[int],
    plan: RenderPlan,
    deadline: float | None,
) -> bytes:
    """A GIF whose animated layers (at `animated` in `layers`: countdowns) tick together,
    each drawn between the layers below and above it."""
    faces = []
    belows = []
    start = 0
    for index in animated:
        _draw(canvas, layers[start:index], plan, deadline)
        kind = LAYER_KINDS[layers[index].kind]
        face = kind.timeline(canvas, kind.own(layers[index]), plan.dpr, plan.now)
        face.draw_fixed(canvas)
        faces.append(face)
        belows.append(canvas if index == animated[-1] else canvas.copy())
        start = index + 1
    # Above each animated layer, from the top down: the layers up to the next one, its
    # fixed part, and what is above that one.
    aboves: list[Image.Image | None] = []
    above: Image.Image | None = None
    for k in reversed(range(len(animated))):
        upper = layers[animated[k] + 1 : animated[k + 1] if k + 1 < len(animated) else None]
        if upper or k + 1 < len(animated):
            overlay = Image.new("RGBA", canvas.size, _TRANSPARENT)
            _draw(overlay, upper, plan, deadline)
            if k + 1 < len(animated):
                faces[k + 1].draw_fixed(overlay)
            if above is not None:
                overlay.alpha_composite(above)
            above = overlay
        aboves.insert(0, above)
    _check(deadline)
    picture = canvas if aboves[-1] is None else Image.alpha_composite(canvas, aboves[-1])
    placed = [Placed(*parts) for parts in zip(faces, belows, aboves, strict=True)]
    return animate_gif(picture, placed, max_bytes=plan.max_bytes)


def _static_picture(plan: RenderPlan, deadline: float | None) -> StaticPicture | None:
    """The plan's static layers drawn (from the cache when it has them); None if it has none."""
    if plan.static_prefix == 0:
        return None
    size = (plan.width * plan.dpr, plan.height * plan.dpr)
    prefix = plan.layers[: plan.static_prefix]
    if needs_clock(prefix):
        raise ValueError("a layer that needs the clock cannot be in the static prefix")
    key = (size, plan.dpr, prefix)
    cached = _PREFIXES.get(key)
    if cached is None:
        canvas = Image.new("RGBA", size, _TRANSPARENT)
        _draw(canvas, prefix, plan, deadline)
        cached = StaticPicture(canvas)
        _PREFIXES.put(key, cached)
    return cached


def _animated(plan: RenderPlan, layers: tuple[Layer, ...]) -> list[int]:
    """The indexes of the layers that animate this GIF (none in other formats)."""
    if plan.format != "gif":
        return []
    return [index for index, layer in enumerate(layers) if frames(layer) > 1]


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
