"""Countdowns, byte budgets and remote images through real opens (the app, Redis, bytes)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image, ImageChops, ImageSequence, ImageStat
from sample_blocks import greeting
from support import AUTH, decode, put_block, signed

from loadtest.bench_serve import countdown_block

DEADLINE = datetime(2026, 12, 24, 17, 0, tzinfo=UTC)


def timer_block(until: str = DEADLINE.isoformat()) -> dict[str, Any]:
    """The benchmark's countdown in five frames, with an `expired` variant for after it."""
    block = countdown_block(until, frames=5)
    block["variants"].append(
        {
            "name": "expired",
            "layers": [
                {"type": "fill", "color": "#444444"},
                {
                    "type": "text",
                    "box": [20, 20, 560, 80],
                    "text": "The sale has ended",
                    "size": 40,
                    "color": "#ffffff",
                },
            ],
            "link": "https://shop.example.com/",
        }
    )
    return block


def frames(body: bytes) -> list[Image.Image]:
    return [f.convert("RGB") for f in ImageSequence.Iterator(Image.open(io.BytesIO(body)))]


def close(a: Image.Image, b: Image.Image) -> bool:
    return max(ImageStat.Stat(ImageChops.difference(a, b)).mean) < 1.5


async def preview(client: Any, block: str, at: datetime, fmt: str = "gif", **body: Any) -> Any:
    return await client.post(
        f"/api/v1/blocks/{block}/preview",
        json={"at": at.isoformat(), "format": fmt, **body},
        headers=AUTH,
    )


async def test_the_first_frame_is_the_time_left_at_the_open(client: Any) -> None:
    await put_block(client, "sale", timer_block())
    at = DEADLINE - timedelta(hours=5)
    first = await preview(client, "sale", at)
    assert first.headers["X-Atopen-Variant"] == "timer"
    gif = frames(await first.read())
    assert len(gif) == 5
    assert not close(gif[0], gif[1])  # the seconds tick
    # What Outlook shows (frame 1) is what a PNG of the same moment shows.
    png = decode(await (await preview(client, "sale", at, "png")).read()).convert("RGB")
    assert close(gif[0], png)
    # One second later, frame 1 is what frame 2 was.
    later = frames(await (await preview(client, "sale", at + timedelta(seconds=1))).read())
    assert close(later[0], gif[1])


async def test_after_the_deadline_the_expired_variant_shows(client: Any) -> None:
    await put_block(client, "sale", timer_block())
    answer = await preview(client, "sale", DEADLINE + timedelta(seconds=1))
    assert answer.headers["X-Atopen-Variant"] == "expired"
    # Without an `expired` variant the timer shows zeros instead.
    block = timer_block()
    block["variants"] = block["variants"][:1]
    await put_block(client, "sale", block)
    zeros = await preview(client, "sale", DEADLINE + timedelta(hours=1))
    assert zeros.headers["X-Atopen-Variant"] == "timer"
    again = await preview(client, "sale", DEADLINE + timedelta(hours=2))
    assert (await zeros.read()) == (await again.read())


async def test_a_local_deadline_follows_the_recipients_zone(client: Any) -> None:
    await put_block(client, "local", timer_block(until="2026-12-24T18:00"))
    at = datetime(2026, 12, 24, 12, 0, tzinfo=UTC)
    warsaw = await (await preview(client, "local", at, "png", tz="Europe/Warsaw")).read()
    lisbon = await (await preview(client, "local", at, "png", tz="Europe/Lisbon")).read()
    assert warsaw != lisbon  # 5 hours left in Warsaw, 6 in Lisbon


async def test_a_timer_renders_once_a_second_however_many_open_it(client: Any) -> None:
    until = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    await put_block(client, "busy", timer_block(until=until))
    text = await (await client.get("/metrics", headers=AUTH)).text()
    before = _renders(text, "busy")
    responses = await asyncio.gather(
        *(client.get(signed(f"/i/busy.gif?r=u{i}")) for i in range(40))
    )
    assert {r.headers["X-Atopen-Variant"] for r in responses} == {"timer"}
    text = await (await client.get("/metrics", headers=AUTH)).text()
    # One render per second of the clock: 40 opens inside one or two seconds.
    assert 1 <= _renders(text, "busy") - before <= 2


def _renders(metrics_text: str, block: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(f'atopen_renders_total{{block="{block}"}}'):
            return float(line.rpartition(" ")[2])
    return 0.0


async def test_a_byte_budget_is_kept_in_every_format(client: Any) -> None:
    block = greeting("{{ profile.first_name }} " * 3)
    qr = {"type": "qr", "box": [0, 0, 100, 100], "data": "y" * 150}
    block["variants"][0]["layers"].insert(1, qr)
    await put_block(client, "large", block)
    await put_block(client, "small", {**block, "max_bytes": 30_000})
    await client.put("/api/v1/profiles/u1", json={"first_name": "Małgorzata"}, headers=AUTH)
    unbounded = await (await client.get(signed("/i/large.jpg?r=u1&dpr=3"))).read()
    assert len(unbounded) > 30_000  # without the budget, this one would not fit
    for ext in ("png", "jpg", "gif"):
        for dpr in (1, 2, 3):
            response = await client.get(signed(f"/i/small.{ext}?r=u1&dpr={dpr}"))
            body = await response.read()
            assert response.headers["X-Atopen-Variant"] == "named"
            assert len(body) <= 30_000, (ext, dpr, len(body))
            assert decode(body).size == (400 * dpr, 100 * dpr)


async def test_a_default_that_cannot_fit_its_budget_is_rejected(client: Any) -> None:
    block = greeting()
    block["default"]["layers"] = [
        {"type": "qr", "box": [0, 0, 100, 100], "data": "x" * 200},
        {"type": "text", "box": [100, 0, 300, 100], "text": "noise " * 40, "size": 9},
    ]
    block["max_bytes"] = 1024
    response = await client.put("/api/v1/blocks/tiny", json=block, headers=AUTH)
    assert response.status == 422
    fields = [d["field"] for d in (await response.json())["error"]["details"]]
    assert fields == ["max_bytes"]


async def test_an_unreachable_remote_image_makes_the_variant_fall_through(client: Any) -> None:
    block = greeting()
    block["variants"][0]["layers"].append(
        {"type": "image", "box": [300, 10, 80, 80], "src": "https://images.example.invalid/a.png"}
    )
    await put_block(client, "remote", block)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    response = await client.get(signed("/i/remote.png?r=u1"))
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"
