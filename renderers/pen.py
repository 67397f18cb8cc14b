"""Drawing lines of text runs: glyph coverage into masks, colour glyphs into an overlay.

A text is drawn in up to three parts that the caller composites in this order: the
halo (stroke) mask, the fill mask, and the colour glyphs (emoji) that bring their own
colours. All three are the size of the area drawn on, so text is clipped to it.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from renderers.fields import RGBA
from renderers.glyphs import drawn_px, face_info
from renderers.paint import paint_mask
from renderers.runs import Ruler, Run, shaped


class Pen:
    """Draws runs into masks of `size`; `stroke_px` > 0 also draws a halo that wide."""

    def __init__(self, size: tuple[int, int], stroke_px: int = 0) -> None:
        self.size = size
        self.stroke_px = stroke_px
        self.fill = Image.new("L", size, 0)
        self.stroke = Image.new("L", size, 0) if stroke_px else None
        self.colour: Image.Image | None = None  # RGBA, made when a colour glyph is drawn
        self._fill_pen = ImageDraw.Draw(self.fill)
        self._stroke_pen = ImageDraw.Draw(self.stroke) if self.stroke is not None else None

    def line(self, runs: list[Run], ruler: Ruler, left: float, baseline: float, px: int) -> None:
        """Draw `runs` (in display order) from `left` on the `baseline`, at `px` pixels."""
        x = left
        for index, run in enumerate(runs):
            if index:
                x += ruler.run_width(runs[index - 1], px)
            if face_info(run.face).colour:
                self._colour_run(run, x, baseline, px)
            else:
                self._outline_run(run, x, baseline, px)

    def paint(self, canvas: Image.Image, origin: tuple[int, int], color: RGBA, halo: RGBA) -> None:
        """Composite the drawing onto `canvas` at `origin`: halo, then fill, then colour glyphs."""
        if self.stroke is not None:
            paint_mask(canvas, halo, self.stroke, origin)
        paint_mask(canvas, color, self.fill, origin)
        if self.colour is not None:
            canvas.alpha_composite(self.colour, origin)

    def _outline_run(self, run: Run, x: float, baseline: float, px: int) -> None:
        font, _ = drawn_px(run.face, px)
        string, direction = shaped(run)
        at = (round(x), round(baseline))
        self._fill_pen.text(at, string, font=font, fill=255, anchor="ls", direction=direction)
        if self._stroke_pen is not None:
            self._stroke_pen.text(
                at,
                string,
                font=font,
                fill=255,
                anchor="ls",
                direction=direction,
                stroke_width=self.stroke_px,
                stroke_fill=255,
            )

    def _colour_run(self, run: Run, x: float, baseline: float, px: int) -> None:
        """Colour glyphs are drawn apart and pasted: bitmap faces have one size and are scaled."""
        font, factor = drawn_px(run.face, px)
        string, direction = shaped(run)
        bbox = font.getbbox(string, anchor="ls", direction=direction)
        left, top, right, bottom = (round(edge) for edge in bbox)
        if right <= left or bottom <= top:
            return
        glyphs = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
        ImageDraw.Draw(glyphs).text(
            (-left, -top), string, font=font, anchor="ls", direction=direction, embedded_color=True
        )
        if factor != 1.0:
            size = (max(1, round(glyphs.width * factor)), max(1, round(glyphs.height * factor)))
            glyphs = glyphs.resize(size, Image.Resampling.LANCZOS)
        at = (round(x + left * factor), round(baseline + top * factor))
        if self.colour is None:
            self.colour = Image.new("RGBA", self.size, (0, 0, 0, 0))
        self.colour.alpha_composite(glyphs, dest=_clamped(at), source=_source(at))
        self._halo(glyphs.getchannel("A"), at)

    def _halo(self, coverage: Image.Image, at: tuple[int, int]) -> None:
        if self.stroke is None:
            return
        reach = self.stroke_px
        grown = Image.new("L", (coverage.width + 2 * reach, coverage.height + 2 * reach), 0)
        grown.paste(coverage, (reach, reach))
        grown = grown.filter(ImageFilter.MaxFilter(2 * reach + 1))
        left, top = at[0] - reach, at[1] - reach
        region = (left, top, left + grown.width, top + grown.height)
        self.stroke.paste(ImageChops.lighter(self.stroke.crop(region), grown), region[:2])


def _clamped(at: tuple[int, int]) -> tuple[int, int]:
    return (max(0, at[0]), max(0, at[1]))


def _source(at: tuple[int, int]) -> tuple[int, int]:
    """Where in a pasted image the visible part starts, when `at` is off the top or left edge."""
    return (max(0, -at[0]), max(0, -at[1]))
