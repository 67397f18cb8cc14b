"""`/api/v1/blocks`: create, replace, read, list, delete, and what a bad definition gets."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from sample_blocks import one_variant_block
from support import AUTH, decode, signed

Client = TestClient[Any, Any]
Definition = dict[str, Any]

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def block(color: str = "#ff0000") -> Definition:
    """A valid block: one personalised variant and a flat-coloured default."""
    return one_variant_block(
        "named",
        "profile.first_name",
        "Hi {{ profile.first_name }}",
        "https://shop.example.com/named",
        width=120,
        height=60,
        background="#00ff00",
        default_color=color,
        size=20,
    )


async def put(client: Client, block_id: str, body: Any) -> Any:
    return await client.put(f"/api/v1/blocks/{block_id}", json=body, headers=AUTH)


async def default_pixel(client: Client, block_id: str) -> tuple[int, ...]:
    response = await client.get(f"/i/{block_id}.png")
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"
    pixel = decode(await response.read()).convert("RGB").getpixel((5, 5))
    assert isinstance(pixel, tuple)
    return pixel


def fields_of(payload: Any) -> list[str]:
    error = payload["error"]
    assert error["code"] == "invalid"
    assert error["message"]
    for detail in error["details"]:
        assert isinstance(detail["field"], str)
        assert isinstance(detail["message"], str)
        assert detail["message"]
    return [d["field"] for d in error["details"]]


async def test_put_creates_then_replaces_with_increasing_versions(client: Client) -> None:
    created = await put(client, "hero", block())
    assert created.status == 201
    first = await created.json()
    assert first["id"] == "hero"
    assert first["version"] == 1
    assert first["definition"] == block()

    replaced = await put(client, "hero", block("#0000ff"))
    assert replaced.status == 200
    second = await replaced.json()
    assert second["version"] == 2
    assert second["definition"] == block("#0000ff")


async def test_get_returns_the_stored_definition_and_version(
    client: Client, store: redis.Redis
) -> None:
    await put(client, "hero", block())
    await put(client, "hero", block("#0000ff"))
    response = await client.get("/api/v1/blocks/hero", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["id"] == "hero"
    assert body["version"] == 2
    assert body["definition"] == block("#0000ff")
    assert body["updated_at"]
    raw = store.hget("atopen:blocks", "hero")
    assert isinstance(raw, bytes)
    stored = orjson.loads(raw)
    assert stored["version"] == 2
    assert stored["definition"] == block("#0000ff")


async def test_replacing_a_block_changes_the_served_image(client: Client) -> None:
    await put(client, "hero", block())
    assert await default_pixel(client, "hero") == RED
    await put(client, "hero", block("#0000ff"))
    assert await default_pixel(client, "hero") == BLUE


async def test_get_unknown_block_is_404(client: Client) -> None:
    response = await client.get("/api/v1/blocks/nope", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_list_holds_every_block_in_id_order(client: Client) -> None:
    empty = await client.get("/api/v1/blocks", headers=AUTH)
    assert await empty.json() == {"blocks": []}
    await put(client, "zeta", block())
    await put(client, "alpha", block("#0000ff"))
    response = await client.get("/api/v1/blocks", headers=AUTH)
    assert response.status == 200
    blocks = (await response.json())["blocks"]
    assert [b["id"] for b in blocks] == ["alpha", "zeta"]
    assert blocks[0]["definition"] == block("#0000ff")
    assert [b["version"] for b in blocks] == [1, 1]


async def test_delete_removes_the_block_and_its_image(client: Client, store: redis.Redis) -> None:
    await put(client, "hero", block())
    deleted = await client.delete("/api/v1/blocks/hero", headers=AUTH)
    assert deleted.status == 204
    assert store.hget("atopen:blocks", "hero") is None

    again = await client.delete("/api/v1/blocks/hero", headers=AUTH)
    assert again.status == 404
    assert (await again.json())["error"]["code"] == "not_found"
    assert (await client.get("/api/v1/blocks/hero", headers=AUTH)).status == 404

    image = await client.get("/i/hero.png")
    assert image.status == 404
    assert image.content_type == "image/gif"
    pixel = decode(await image.read())
    assert pixel.size == (1, 1)
    assert pixel.format == "GIF"


def _set(path: list[Any], value: Any) -> Callable[[Definition], Any]:
    def mutate(d: Definition) -> Definition:
        target: Any = d
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return d

    return mutate


def _delete(path: list[Any]) -> Callable[[Definition], Any]:
    def mutate(d: Definition) -> Definition:
        target: Any = d
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        return d

    return mutate


def _duplicate_variant(d: Definition) -> Definition:
    d["variants"].append(copy.deepcopy(d["variants"][0]))
    return d


NEEDS_DATA = {"type": "text", "box": [4, 4, 112, 52], "text": "{{ profile.first_name }}"}
UNKNOWN_ASSET = {"type": "image", "box": [0, 0, 60, 60], "src": "no-such-asset.png"}

INVALID: dict[str, tuple[Callable[[Definition], Any], str]] = {
    "not an object": (lambda d: [d], "body"),
    "missing width": (_delete(["width"]), "width"),
    "bad format": (_set(["format"], "bmp"), "format"),
    "unknown top-level field": (_set(["colour"], "red"), "colour"),
    "when does not compile": (
        _set(["variants", 0, "when"], "profile.first_name =="),
        "variants[0].when",
    ),
    "template does not compile": (
        _set(["variants", 0, "layers", 1, "text"], "Hi {{ profile.first_name"),
        "variants[0].layers[1].text",
    ),
    "bad colour": (_set(["default", "layers", 0, "color"], "#zz"), "default.layers[0].color"),
    "unknown layer type": (
        _set(["variants", 0, "layers", 0], {"type": "circle", "color": "#fff"}),
        "variants[0].layers[0].type",
    ),
    "unknown layer field": (
        _set(["variants", 0, "layers", 0, "opacity"], 0.5),
        "variants[0].layers[0].opacity",
    ),
    "missing required layer field": (
        _delete(["variants", 0, "layers", 1, "box"]),
        "variants[0].layers[1].box",
    ),
    "duplicate variant name": (_duplicate_variant, "variants[1].name"),
    "default needs data": (
        _set(["default", "layers"], [{"type": "fill", "color": "#fff"}, NEEDS_DATA]),
        "default",
    ),
    "default link not http": (
        _set(["default", "link"], "javascript:alert(1)"),
        "default.link",
    ),
    "default link ftp": (_set(["default", "link"], "ftp://shop.example.com/"), "default.link"),
    "unknown asset": (
        _set(["variants", 0, "layers", 0], UNKNOWN_ASSET),
        "variants[0].layers[0].src",
    ),
}


@pytest.mark.parametrize(("mutate", "field"), list(INVALID.values()), ids=list(INVALID))
async def test_invalid_definition_is_422_naming_the_field(
    client: Client, store: redis.Redis, mutate: Callable[[Definition], Any], field: str
) -> None:
    response = await put(client, "hero", mutate(block()))
    assert response.status == 422, await response.text()
    assert field in fields_of(await response.json())
    # Nothing half-written: not in the snapshot, not in the store, no version taken.
    assert (await client.get("/api/v1/blocks/hero", headers=AUTH)).status == 404
    assert store.hget("atopen:blocks", "hero") is None
    assert store.hget("atopen:block-versions", "hero") is None
    assert (await client.get("/i/hero.png")).status == 404


async def test_body_that_is_not_json_is_422(client: Client) -> None:
    response = await client.put(
        "/api/v1/blocks/hero",
        data=b'{"width": 12',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status == 422
    assert fields_of(await response.json()) == ["body"]
    assert (await client.get("/api/v1/blocks/hero", headers=AUTH)).status == 404


@pytest.mark.parametrize("block_id", ["-starts-with-dash", ".hidden", "a" * 129, "sp ace"])
async def test_bad_block_id_in_the_path_is_422(
    client: Client, store: redis.Redis, block_id: str
) -> None:
    response = await put(client, block_id, block())
    assert response.status == 422, await response.text()
    assert fields_of(await response.json()) == ["id"]
    assert store.hlen("atopen:blocks") == 0


async def test_every_problem_in_one_body_is_reported(client: Client) -> None:
    definition = block()
    del definition["width"]
    definition["format"] = "bmp"
    definition["variants"][0]["when"] = "profile.first_name =="
    definition["default"]["layers"][0]["color"] = "#zz"
    response = await put(client, "hero", definition)
    assert response.status == 422
    fields = fields_of(await response.json())
    assert {"width", "format", "variants[0].when", "default.layers[0].color"} <= set(fields)


async def test_rejected_replace_keeps_the_old_block(client: Client, store: redis.Redis) -> None:
    await put(client, "hero", block())
    stored_before = store.hget("atopen:blocks", "hero")
    for mutate, field in INVALID.values():
        response = await put(client, "hero", mutate(block("#0000ff")))
        assert response.status == 422, await response.text()
        assert field in fields_of(await response.json())

    current = await client.get("/api/v1/blocks/hero", headers=AUTH)
    body = await current.json()
    assert body["version"] == 1
    assert body["definition"] == block()
    assert store.hget("atopen:blocks", "hero") == stored_before
    assert store.hget("atopen:block-versions", "hero") == b"1"
    assert await default_pixel(client, "hero") == RED
    # The next good PUT continues the version sequence where it was.
    replaced = await put(client, "hero", block("#0000ff"))
    assert (await replaced.json())["version"] == 2


async def test_block_can_be_created_again_after_delete(client: Client) -> None:
    await put(client, "hero", block())
    await client.delete("/api/v1/blocks/hero", headers=AUTH)
    recreated = await put(client, "hero", block("#0000ff"))
    assert recreated.status == 201
    body = await recreated.json()
    assert body["definition"] == block("#0000ff")
    assert body["version"] > 1  # versions never repeat, so caches keyed on them stay right
    assert await default_pixel(client, "hero") == BLUE


# A loop that would run for hours; the rule's time budget stops it.
RUNAWAY = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"


async def test_a_default_that_runs_away_is_422_naming_the_default(
    client: Client, store: redis.Redis
) -> None:
    definition = block()
    definition["default"]["layers"].append(
        {"type": "text", "box": [4, 4, 112, 52], "text": RUNAWAY}
    )
    response = await put(client, "hero", definition)
    assert response.status == 422, await response.text()
    assert "default" in fields_of(await response.json())
    assert store.hget("atopen:blocks", "hero") is None


async def test_a_runaway_rule_falls_through_and_the_trace_says_why(client: Client) -> None:
    definition = block()
    runaway = copy.deepcopy(definition["variants"][0])
    runaway["name"] = "runaway"
    runaway["when"] = "range(100000) | select('in', range(100000) | list) | list | length > 0"
    definition["variants"].insert(0, runaway)
    assert (await put(client, "hero", definition)).status == 201
    profile = await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    assert profile.status in (200, 201)

    image = await client.get(signed("/i/hero.png?r=u1"))
    assert image.status == 200
    assert image.headers["X-Atopen-Variant"] == "named"
    assert (await client.get("/healthz")).status == 200

    preview = await client.post(
        "/api/v1/blocks/hero/preview",
        json={"recipient": "u1"},
        headers={**AUTH, "Accept": "application/json"},
    )
    trace = (await preview.json())["trace"]
    assert [(t["variant"], t["chosen"]) for t in trace] == [("runaway", False), ("named", True)]
    assert "ms budget" in trace[0]["reason"]
