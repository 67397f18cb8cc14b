"""The packages import only downwards: `renderers`, then `content_sources`, then `server`;
inside `server`, its rooms too, in the order of `SERVER_ROOMS` (docs/development.md).

Every module's imports are read with `ast` (function-level ones included), so an import
that would make a lower layer know a higher one fails here, not in a later refactoring.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: each package may import those before it, never those after.
LAYERS = ("renderers", "content_sources", "server")
# The rooms of `server`, lowest first; "" is the modules directly in `server/` (settings,
# API tokens, metrics, signing, CPUs), which every room above the store's may use.
SERVER_ROOMS = ("datastore", "", "blocks", "records", "opens", "api", "studio", "web", "process")
# `python -m server` is the command itself: it starts the top room.
ENTRY_POINT = "server.__main__"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Absolute names of what the module imports; relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])])
            else:
                assert node.module is not None
                yield node.module


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_layer_has_modules() -> None:
    for layer in LAYERS:
        assert len(modules_of(layer)) > 5, layer


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_no_layer_above_it(layer: str) -> None:
    above = LAYERS[LAYERS.index(layer) + 1 :]
    wrong = [
        f"{module_name(path)} imports {name}"
        for path in modules_of(layer)
        for name in imported_modules(path)
        if name.split(".")[0] in above
    ]
    assert wrong == []


def room_of(module: str) -> str:
    """The room of a module of `server`: its folder, or "" for the top-level modules."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / "server" / parts[1]).is_dir()):
        return parts[1]
    return ""


def test_every_room_of_server_has_a_place_in_the_order() -> None:
    rooms = {room_of(module_name(path)) for path in modules_of("server")}
    assert rooms == set(SERVER_ROOMS)


@pytest.mark.parametrize("room", SERVER_ROOMS)
def test_a_room_of_server_imports_no_room_above_it(room: str) -> None:
    above = SERVER_ROOMS[SERVER_ROOMS.index(room) + 1 :]
    wrong = [
        f"{module_name(path)} imports {name}"
        for path in modules_of("server")
        if room_of(module_name(path)) == room and module_name(path) != ENTRY_POINT
        for name in imported_modules(path)
        if name.split(".")[0] == "server" and room_of(name) in above
    ]
    assert wrong == []


def test_no_two_modules_share_a_name() -> None:
    """A name leads to one module (or package), so that a search for it finds one file:
    the API's route modules are named `COLLECTION_routes.py`, beside the `blocks`,
    `records`, `events`, ... that they serve."""
    named: dict[str, list[str]] = {}
    for layer in LAYERS:
        for path in modules_of(layer):
            name = path.parent.name if path.name == "__init__.py" else path.stem
            if name != "__main__":
                named.setdefault(name, []).append(module_name(path))
    assert {name: found for name, found in named.items() if len(found) > 1} == {}
