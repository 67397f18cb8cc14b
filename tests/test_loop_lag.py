"""The event loop's lag: how late a timer fires when the loop is busy."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from server.loop_lag import INTERVAL_S, WINDOW_S, LoopLag


async def test_lag_is_how_long_the_loop_was_busy_past_a_tick() -> None:
    lag = LoopLag()
    lag.start()
    try:
        await asyncio.sleep(INTERVAL_S * 3)
        time.sleep(0.2)  # noqa: ASYNC251 - the loop runs nothing else meanwhile
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert lag.seconds >= 0.2 - INTERVAL_S
        stalled = lag.seconds
        for _ in range(200):  # a free loop catches up at the next ticks
            await asyncio.sleep(INTERVAL_S)
            if lag.seconds < stalled / 2:
                break
        assert lag.seconds < stalled / 2
    finally:
        lag.stop()
    assert lag.seconds == 0.0
    time.sleep(0.05)  # noqa: ASYNC251 - a stall no tick may see
    await asyncio.sleep(INTERVAL_S * 2)
    assert lag.seconds == 0.0  # stopped: no more ticks


async def test_the_worst_lag_of_each_second_is_the_metric() -> None:
    lag = LoopLag()
    lag.start()
    try:
        await asyncio.sleep(INTERVAL_S * 3)
        time.sleep(0.2)  # noqa: ASYNC251 - the loop runs nothing else meanwhile
        shown = []
        for _ in range(round(2 * WINDOW_S / INTERVAL_S)):  # until its window is published
            await asyncio.sleep(INTERVAL_S)
            shown.append(REGISTRY.get_sample_value("atopen_event_loop_lag_seconds") or 0.0)
            if shown[-1] >= 0.2 - INTERVAL_S:
                break
        assert max(shown) >= 0.2 - INTERVAL_S
    finally:
        lag.stop()
