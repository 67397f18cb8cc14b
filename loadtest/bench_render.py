"""Render benchmark: atopen's renderer against a minimal Pillow script drawing the same image.

    .venv/bin/python loadtest/bench_render.py [--seconds 3]

For each image (a personalised 600x200 text PNG, a 600x300 product card PNG, a 600x120
countdown GIF of 60 frames) it prints renders per second and milliseconds per image
for atopen (`render(RenderPlan)`), the same for the floor (the same picture drawn with
Pillow calls and no atopen code), and the ratio of the times. One thread: the numbers
are per core. Every render differs (another name, another second), as on real opens.
Not a test: nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw, ImageFont

from renderers.fonts import builtin_fonts
from renderers.layers import LAYER_KINDS
from renderers.layers.base import parse_layer
from renderers.plan import Layer, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources

NAMES = ("Ann", "Bob", "Cleo", "Dan", "Małgorzata", "Françoise", "Zoë", "Łukasz")
NOW = datetime(2026, 12, 20, 10, 0, 0, tzinfo=ZoneInfo("Europe/Warsaw"))
DEADLINE = datetime(2026, 12, 24, 18, 0, 0, tzinfo=ZoneInfo("Europe/Warsaw"))
BLUE, WHITE, YELLOW = (27, 31, 59), (248, 249, 250), (255, 212, 59)


def measure(draw: Callable[[int], bytes], seconds: float) -> tuple[float, int]:
    """Images per second drawing `draw(i)` for about `seconds`, and the last image's bytes."""
    for index in range(3):  # warm up: fonts opened, caches filled
        draw(index)
    count, started = 0, time.perf_counter()
    size = 0
    while time.perf_counter() - started < seconds:
        size = len(draw(count))
        count += 1
    return count / (time.perf_counter() - started), size


class Bench:
    def __init__(self, assets: Path) -> None:
        product = Image.new("RGB", (800, 800), "#e03131")
        product.paste("#1971c2", (400, 0, 800, 800))
        ImageDraw.Draw(product).ellipse((200, 200, 600, 600), fill="#f08c00")
        product.save(assets / "boots.jpg", quality=90)
        self.resources = LocalResources([assets], builtin_fonts())
        self.regular = str(builtin_fonts()["roboto-regular"])
        self.bold = str(builtin_fonts()["roboto-bold"])
        self.product = Image.open(assets / "boots.jpg").convert("RGBA")

    def layer(self, **fields: object) -> Layer:
        return parse_layer(LAYER_KINDS[str(fields["type"])], fields, self.resources)

    # A personalised 600x200 text PNG

    def text_atopen(self, index: int) -> bytes:
        layers = (
            self.layer(type="fill", color="#1b1f3b"),
            self.layer(
                type="text",
                box=[24, 24, 552, 152],
                text=f"Thanks for your order, {NAMES[index % len(NAMES)]}!",
                size=40,
                color="#f8f9fa",
                valign="middle",
            ),
        )
        # The fill is the same for every recipient: the server marks it static (so does this).
        return render(RenderPlan(600, 200, 1, "png", layers, static_prefix=1))

    def text_floor(self, index: int) -> bytes:
        image = Image.new("RGB", (600, 200), BLUE)
        font = ImageFont.truetype(self.regular, 40)
        ImageDraw.Draw(image).text(
            (24, 100),
            f"Thanks for your order, {NAMES[index % len(NAMES)]}!",
            font=font,
            fill=WHITE,
            anchor="lm",
        )
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=6)
        return out.getvalue()

    # A 600x300 product card: an image and three texts

    def card_atopen(self, index: int) -> bytes:
        # In the order the server draws them: the layers that are the same for everyone
        # (the price and the button overlap no personalized layer) first, drawn once.
        layers = (
            self.layer(type="fill", color="#ffffff"),
            self.layer(type="image", box=[0, 0, 300, 300], src="boots.jpg", fit="cover"),
            self.layer(
                type="text",
                box=[324, 140, 252, 40],
                text="129.00 EUR",
                size=32,
                color="#0b6e4f",
                font="sans-bold",
            ),
            self.layer(
                type="text", box=[324, 220, 252, 48], text="Shop now", size=24, color="#1971c2"
            ),
            self.layer(
                type="text",
                box=[324, 32, 252, 80],
                text=f"{NAMES[index % len(NAMES)]}, your Trail boots are back",
                size=28,
                color="#212529",
            ),
        )
        return render(RenderPlan(600, 300, 1, "png", layers, static_prefix=4))

    def card_floor(self, index: int) -> bytes:
        image = Image.new("RGB", (600, 300), (255, 255, 255))
        image.paste(self.cover, (0, 0), self.cover)
        draw = ImageDraw.Draw(image)
        draw.text(
            (324, 32),
            f"{NAMES[index % len(NAMES)]}, your Trail",
            font=ImageFont.truetype(self.regular, 28),
            fill=(33, 37, 41),
        )
        draw.text(
            (324, 66),
            "boots are back",
            font=ImageFont.truetype(self.regular, 28),
            fill=(33, 37, 41),
        )
        draw.text(
            (324, 140), "129.00 EUR", font=ImageFont.truetype(self.bold, 32), fill=(11, 110, 79)
        )
        draw.text(
            (324, 220), "Shop now", font=ImageFont.truetype(self.regular, 24), fill=(25, 113, 194)
        )
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=6)
        return out.getvalue()

    @property
    def cover(self) -> Image.Image:
        # Resized once, as a script drawing many cards would (atopen caches it too).
        if not hasattr(self, "_cover"):
            self._cover = self.product.resize((300, 300), Image.Resampling.LANCZOS)
        return self._cover

    # A 600x120 countdown GIF of 60 one-second frames

    def countdown_atopen(self, index: int) -> bytes:
        layers = (
            self.layer(type="fill", color="#1b1f3b"),
            self.layer(
                type="countdown", box=[20, 8, 560, 104], until=DEADLINE.isoformat(), color="#ffd43b"
            ),
        )
        now = NOW + timedelta(seconds=index)
        return render(RenderPlan(600, 120, 1, "gif", layers, now=now, static_prefix=1))

    def countdown_floor(self, index: int) -> bytes:
        font = ImageFont.truetype(self.regular, 64)
        left = int((DEADLINE - NOW).total_seconds()) - index
        frames = []
        for second in range(60):
            value = max(0, left - second)
            days, rest = divmod(value, 86400)
            hours, rest = divmod(rest, 3600)
            minutes, seconds = divmod(rest, 60)
            frame = Image.new("RGB", (600, 120), BLUE)
            ImageDraw.Draw(frame).text(
                (300, 60),
                f"{days:02d} : {hours:02d} : {minutes:02d} : {seconds:02d}",
                font=font,
                fill=YELLOW,
                anchor="mm",
            )
            frames.append(frame)
        out = io.BytesIO()
        frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=1000)
        return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (6 in all)")
    arguments = parser.parse_args()
    with TemporaryDirectory() as assets:
        bench = Bench(Path(assets))
        rows = [
            ("text PNG 600x200", bench.text_atopen, bench.text_floor),
            ("product card PNG 600x300", bench.card_atopen, bench.card_floor),
            ("countdown GIF 600x120x60", bench.countdown_atopen, bench.countdown_floor),
        ]
        print(
            f"{'image':<26}{'atopen/s':>10}{'ms':>8}{'KB':>7}{'floor/s':>10}{'ms':>8}{'KB':>7}{'ratio':>8}"
        )
        for name, ours, floor in rows:
            ours_rate, ours_bytes = measure(ours, arguments.seconds)
            floor_rate, floor_bytes = measure(floor, arguments.seconds)
            print(
                f"{name:<26}{ours_rate:>10.1f}{1000 / ours_rate:>8.2f}{ours_bytes / 1024:>7.1f}"
                f"{floor_rate:>10.1f}{1000 / floor_rate:>8.2f}{floor_bytes / 1024:>7.1f}"
                f"{floor_rate / ours_rate:>7.2f}x"
            )
        print("ratio: atopen's time per image over the floor's (the targets: 1.3x for the PNGs)")


if __name__ == "__main__":
    main()
