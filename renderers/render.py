"""The render pipeline: a plan in, encoded image bytes out.

Synchronous and pure (no network, no clock but the deadline, no shared state beyond
caches), so the server runs it in a worker thread. An asyncio timeout cannot stop a
running thread, so the renderer checks the deadline itself between layers.
"""

from __future__ import annotations

import time

from PIL import Image

from renderers.encode import encode
from renderers.layers import LAYER_KINDS
from renderers.plan import RenderPlan


class RenderDeadlineExceeded(Exception):
    """The deadline passed before the image was finished."""


def render(plan: RenderPlan, *, deadline: float | None = None) -> bytes:
    """Draw `plan` and encode it; `deadline` is a `time.monotonic()` value to give up at."""
    scale = plan.dpr
    canvas = Image.new("RGBA", (plan.width * scale, plan.height * scale), (0, 0, 0, 0))
    for layer in plan.layers:
        _check(deadline)
        LAYER_KINDS[layer.kind].draw(canvas, layer, scale)
    _check(deadline)
    return encode(canvas, plan.format)


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise RenderDeadlineExceeded("the image was not finished before its deadline")
