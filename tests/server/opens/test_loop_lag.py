"""The event loop's lag: how late a timer fires when the loop is busy, and its metric."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from server.opens.loop_lag import INTERVAL_S, WINDOW_S, LoopLag

STALL_S = 0.2


def shown_lag() -> float:
    return REGISTRY.get_sample_value("atopen_event_loop_lag_seconds") or 0.0


async def test_lag_is_how_long_the_loop_was_busy_past_a_tick() -> None:
    lag = LoopLag()
    lag.start()
    try:
        await asyncio.sleep(INTERVAL_S * 3)
        time.sleep(STALL_S)  # noqa: ASYNC251 - the loop runs nothing else meanwhile
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert lag.seconds >= STALL_S - INTERVAL_S
        stalled = lag.seconds
        shown = [shown_lag()]
        # A free loop catches up at the next ticks; the stall's second is published.
        for _ in range(round(2 * WINDOW_S / INTERVAL_S)):
            await asyncio.sleep(INTERVAL_S)
            shown.append(shown_lag())
            if lag.seconds < stalled / 2 and shown[-1] >= STALL_S - INTERVAL_S:
                break
        assert lag.seconds < stalled / 2
        assert max(shown) >= STALL_S - INTERVAL_S
    finally:
        lag.stop()
    assert lag.seconds == 0.0
    time.sleep(0.05)  # noqa: ASYNC251 - a stall no tick may see
    await asyncio.sleep(INTERVAL_S * 2)
    assert lag.seconds == 0.0  # stopped: no more ticks
