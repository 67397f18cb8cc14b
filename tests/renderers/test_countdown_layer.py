"""The countdown layer: values at a fixed `now`, time zones and DST, labels, GIF frames."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from PIL import GifImagePlugin, Image, ImageChops, ImageSequence, ImageStat

from renderers.encode import ByteBudgetError
from renderers.layers import LAYER_KINDS, needs_clock
from renderers.layers.base import LayerError, parse_layer
from renderers.layers.countdown import CountdownLayer
from renderers.plan import ImageFormat, Layer, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, builtin_fonts

WARSAW = ZoneInfo("Europe/Warsaw")
TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 12, 20, 10, 0, 0, tzinfo=WARSAW)
BOX = [10, 10, 580, 100]


@pytest.fixture(scope="module")
def resources() -> LocalResources:
    return LocalResources([], builtin_fonts())


def countdown(resources: LocalResources, **fields: object) -> CountdownLayer:
    values: dict[str, object] = {"box": BOX, "until": "2026-12-24T18:00:00+01:00", **fields}
    layer = parse_layer(LAYER_KINDS["countdown"], values, resources)
    assert isinstance(layer, CountdownLayer)
    return layer


def draw(
    resources: LocalResources, now: datetime, fmt: ImageFormat = "png", **fields: object
) -> bytes:
    background = parse_layer(LAYER_KINDS["fill"], {"color": "#1b1f3b"}, resources)
    layer = countdown(resources, color="#ffd43b", **fields)
    return render(RenderPlan(600, 120, 1, fmt, (background, layer), now=now))


def frames(data: bytes) -> list[Image.Image]:
    return [frame.convert("RGB") for frame in ImageSequence.Iterator(Image.open(io.BytesIO(data)))]


def close(a: Image.Image, b: Image.Image, tolerance: float = 1.5) -> bool:
    """Mean difference per channel under `tolerance` (a GIF's palette is not exact)."""
    return max(ImageStat.Stat(ImageChops.difference(a, b)).mean) < tolerance


# Values


def test_first_frame_is_the_time_left_at_now(resources: LocalResources) -> None:
    layer = countdown(resources)
    assert layer.remaining(NOW) == 4 * 86400 + 8 * 3600
    assert layer.frame_texts(NOW, 3) == ["04:08:00:00", "04:07:59:59", "04:07:59:58"]


def test_units_drop_what_they_do_not_show_and_the_largest_takes_the_rest(
    resources: LocalResources,
) -> None:
    layer = countdown(resources, units=["hours", "minutes"])
    assert layer.frame_texts(NOW, 2) == ["104:00", "103:59"]
    assert countdown(resources, units="minutes,seconds").frame_texts(NOW, 1) == ["6240:00"]


def test_after_the_deadline_it_shows_zeros(resources: LocalResources) -> None:
    later = NOW + timedelta(days=10)
    layer = countdown(resources)
    assert layer.remaining(later) == 0
    assert layer.frame_texts(later, 2) == ["00:00:00:00", "00:00:00:00"]
    gif = frames(draw(resources, later, "gif"))
    assert len(gif) == 1  # identical frames are one frame


def test_the_deadline_helper_is_aware_and_in_the_readers_zone(resources: LocalResources) -> None:
    absolute = countdown(resources)
    in_tokyo = absolute.deadline(NOW.astimezone(TOKYO))
    assert in_tokyo.tzinfo == TOKYO
    assert in_tokyo == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    local = countdown(resources, until="2026-12-24T18:00")
    assert local.deadline(NOW) == datetime(2026, 12, 24, 18, 0, tzinfo=WARSAW)
    assert local.deadline(NOW.astimezone(TOKYO)) == datetime(2026, 12, 24, 18, 0, tzinfo=TOKYO)
    with pytest.raises(ValueError, match="aware"):
        local.deadline(datetime(2026, 12, 20, 10, 0))


def test_a_date_alone_means_midnight_where_the_reader_is(resources: LocalResources) -> None:
    layer = countdown(resources, until="2026-12-25")
    assert layer.deadline(NOW) == datetime(2026, 12, 25, 0, 0, tzinfo=WARSAW)


def test_a_local_deadline_across_the_spring_daylight_saving_change(
    resources: LocalResources,
) -> None:
    # Clocks in Warsaw go from 02:00 to 03:00 on 2026-03-29: noon to noon is 23 hours.
    layer = countdown(resources, until="2026-03-29T12:00:00")
    assert layer.remaining(datetime(2026, 3, 28, 12, 0, tzinfo=WARSAW)) == 23 * 3600
    assert layer.remaining(datetime(2026, 3, 28, 12, 0, tzinfo=TOKYO)) == 24 * 3600
    # A wall-clock time the clocks skip is the instant an hour later.
    skipped = countdown(resources, until="2026-03-29T02:30:00")
    assert skipped.deadline(datetime(2026, 3, 29, 1, 0, tzinfo=WARSAW)) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_a_local_deadline_across_the_autumn_change(resources: LocalResources) -> None:
    layer = countdown(resources, until="2026-10-25T12:00:00")
    assert layer.remaining(datetime(2026, 10, 24, 12, 0, tzinfo=WARSAW)) == 25 * 3600


def test_evergreen_deadline_counts_real_hours_after_a_profile_time(
    resources: LocalResources,
) -> None:
    signup = "2026-03-28T12:00:00+01:00"
    layer = countdown(resources, until=signup, plus_hours=48)
    now = datetime(2026, 3, 28, 12, 0, tzinfo=WARSAW)
    assert layer.remaining(now) == 48 * 3600
    assert layer.deadline(now) == datetime(2026, 3, 30, 13, 0, tzinfo=WARSAW)  # DST moved it
    # A template gives the time as Python prints it, with a space.
    spaced = countdown(resources, until="2026-03-28 12:00:00+01:00", plus_hours=48)
    assert spaced.deadline(now) == layer.deadline(now)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"until": "next tuesday"}, "until", "ISO 8601"),
        ({"until": "1999-01-01T00:00:00Z"}, "until", "2000"),
        ({"units": ["days", "weeks"]}, "units", "units from"),
        ({"units": []}, "units", "units from"),
        ({"frames": 61}, "frames", "between 1 and 60"),
        ({"lang": "xx"}, "lang", "one of"),
        ({"separator": "::::"}, "separator", "3 characters"),
        ({"plus_hours": -1}, "plus_hours", "between"),
    ],
)
def test_bad_fields_are_refused(
    resources: LocalResources, fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(LayerError) as caught:
        countdown(resources, **fields)
    assert caught.value.field == field
    assert message in caught.value.message


# Labels


@pytest.mark.parametrize(
    ("lang", "seconds", "labels"),
    [
        ("en", 86400 + 3600 + 60 + 1, ("DAY", "HOUR", "MINUTE", "SECOND")),
        ("en", 2 * 86400 + 2 * 3600, ("DAYS", "HOURS", "MINUTES", "SECONDS")),
        ("fr", 0, ("JOUR", "HEURE", "MINUTE", "SECONDE")),
        ("pl", 2 * 86400 + 5 * 3600 + 22 * 60 + 1, ("DNI", "GODZIN", "MINUTY", "SEKUNDA")),
        ("de", 86400 + 2 * 3600, ("TAG", "STUNDEN", "MINUTEN", "SEKUNDEN")),
    ],
)
def test_labels_follow_the_languages_plural_rules(
    resources: LocalResources, lang: str, seconds: int, labels: tuple[str, ...]
) -> None:
    from renderers.layers.countdown import countdown_face

    until = (NOW + timedelta(seconds=seconds)).isoformat()
    layer = countdown(resources, until=until, lang=lang)
    canvas = Image.new("RGBA", (600, 120))
    face = countdown_face(canvas, layer, 1, NOW, frames=1)
    shown = [c for c in face.frames[0] if c.isalpha()]
    assert tuple(shown) == labels


# Drawing


def test_needs_clock_and_refuses_to_draw_without_now(resources: LocalResources) -> None:
    layer = countdown(resources)
    assert needs_clock([layer])
    with pytest.raises(ValueError, match="now"):
        render(RenderPlan(600, 120, 1, "png", (layer,)))


def test_png_and_jpeg_show_the_first_frame(resources: LocalResources) -> None:
    png = Image.open(io.BytesIO(draw(resources, NOW))).convert("RGB")
    gif_first = frames(draw(resources, NOW, "gif"))[0]
    assert close(png, gif_first)
    jpeg = Image.open(io.BytesIO(draw(resources, NOW, "jpg")))
    # JPEG halves the colour resolution: compare brightness.
    assert close(png.convert("L"), jpeg.convert("L"), tolerance=3)


def test_each_gif_frame_is_the_value_one_second_later(resources: LocalResources) -> None:
    gif = frames(draw(resources, NOW, "gif", frames=5))
    assert len(gif) == 5
    for index, frame in enumerate(gif):
        still = draw(resources, NOW + timedelta(seconds=index))
        assert close(frame, Image.open(io.BytesIO(still)).convert("RGB")), index
    assert ImageChops.difference(gif[0], gif[1]).getbbox() is not None


def test_a_sixty_frame_gif_plays_once_a_second_and_stays_small(resources: LocalResources) -> None:
    data = draw(resources, NOW + timedelta(seconds=30), "gif")
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, GifImagePlugin.GifImageFile)
    assert image.n_frames == 60
    assert image.info["duration"] == 1000
    assert "loop" not in image.info  # played once: it stops on its last value
    assert len(data) < 150_000


def two_timers(resources: LocalResources, *between: Layer, **second: object) -> list[Image.Image]:
    """A GIF with two timers, top and bottom, and `between` layers drawn between them."""
    background = parse_layer(LAYER_KINDS["fill"], {"color": "#1b1f3b"}, resources)
    top = countdown(resources, box=[10, 5, 580, 50], color="#ffd43b", frames=4)
    bottom = countdown(resources, box=[10, 65, 580, 50], color="#ffffff", **second)
    layers = (background, top, *between, bottom)
    return frames(render(RenderPlan(600, 120, 1, "gif", layers, now=NOW)))


def changed(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> bool:
    return ImageChops.difference(a.crop(box), b.crop(box)).getbbox() is not None


TOP_HALF, BOTTOM_HALF = (0, 0, 600, 60), (0, 60, 600, 120)


def test_every_timer_of_a_gif_ticks_and_a_shorter_one_stays_on_its_last_value(
    resources: LocalResources,
) -> None:
    gif = two_timers(resources, frames=8, until="2026-12-31T00:00:00+01:00")
    assert len(gif) == 8  # the longer timer's frames
    assert changed(gif[0], gif[1], TOP_HALF)
    assert changed(gif[0], gif[1], BOTTOM_HALF)
    assert not changed(gif[3], gif[7], TOP_HALF)  # four frames: its last value stays
    assert changed(gif[3], gif[7], BOTTOM_HALF)


def test_a_layer_between_two_timers_covers_the_lower_one_in_every_frame(
    resources: LocalResources,
) -> None:
    cover = parse_layer(
        LAYER_KINDS["rect"], {"box": [0, 0, 600, 60], "color": "#0b6e4f"}, resources
    )
    gif = two_timers(resources, cover, frames=8)
    assert all(not changed(gif[0], frame, TOP_HALF) for frame in gif)
    assert gif[0].getpixel((300, 30)) == (11, 110, 79)
    assert changed(gif[0], gif[1], BOTTOM_HALF)


def test_only_the_changing_digits_differ_between_frames(resources: LocalResources) -> None:
    first, second = (
        Image.open(io.BytesIO(draw(resources, NOW + timedelta(seconds=s)))) for s in (1, 2)
    )
    changed = ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox()
    assert changed is not None
    assert changed[0] > 400  # only the seconds, at the right


def test_the_countdown_stays_in_its_box(resources: LocalResources) -> None:
    for size in (None, 200):
        fields: dict[str, object] = {"size": size} if size else {}
        layer = countdown(resources, box=[100, 20, 300, 60], **fields)
        image = Image.open(io.BytesIO(render(RenderPlan(600, 120, 2, "png", (layer,), now=NOW))))
        bbox = image.getbbox()
        assert bbox is not None
        left, top, right, bottom = bbox
        assert left >= 200
        assert top >= 40
        assert right <= 800
        assert bottom <= 160


def test_a_byte_budget_gives_fewer_frames_that_still_start_right(
    resources: LocalResources,
) -> None:
    full = draw(resources, NOW, "gif")
    background = parse_layer(LAYER_KINDS["fill"], {"color": "#1b1f3b"}, resources)
    layer = countdown(resources, color="#ffd43b")
    budget = len(full) // 2
    plan = RenderPlan(600, 120, 1, "gif", (background, layer), now=NOW, max_bytes=budget)
    data = render(plan)
    assert len(data) <= budget
    cut = frames(data)
    assert 1 <= len(cut) < 60
    assert close(cut[0], frames(full)[0])
    with pytest.raises(ByteBudgetError, match="does not fit"):
        render(RenderPlan(600, 120, 1, "gif", (background, layer), now=NOW, max_bytes=1024))


def test_plans_in_different_zones_are_different_plans(resources: LocalResources) -> None:
    layer = countdown(resources, until="2026-12-24T18:00")
    warsaw = RenderPlan(600, 120, 1, "gif", (layer,), now=NOW)
    tokyo = RenderPlan(600, 120, 1, "gif", (layer,), now=NOW.astimezone(TOKYO))
    assert warsaw.now == tokyo.now  # the same instant ...
    assert warsaw != tokyo  # ... but not the same picture
    assert warsaw == RenderPlan(600, 120, 1, "gif", (layer,), now=NOW)
    with pytest.raises(ValueError, match="aware"):
        RenderPlan(600, 120, 1, "gif", (layer,), now=datetime(2026, 1, 1))
