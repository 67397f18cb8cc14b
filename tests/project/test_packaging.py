"""The wheel, installed away from the repository, runs; and the lock pins what pyproject asks for.

`pip install .` builds a wheel: it must carry every module, subpackages included, the
files the code reads at run time (openapi.json, the starter blocks, assets and demo
data) and nothing it would need from the checkout. The wheel is installed with
`--target` into a directory and run with only that directory and the dependencies'
site-packages on the path, from a working directory outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from support import run_command, run_ok

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "renderers", "content_sources")
TEMPLATES_PACKAGE = "atopen_templates"
Runner = Callable[..., subprocess.CompletedProcess[str]]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pip(*args: str, cwd: Path) -> None:
    run_ok(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the sources (setuptools leaves `build/`
    behind in the tree it builds, and stale files there would end up in the wheel)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in (*PACKAGES, "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    # The locked setuptools in this environment builds it: no build environment to fetch.
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), ".", cwd=source)
    (built,) = dist.glob("atopen-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("installed")
    pip("install", "--no-deps", "--no-compile", "--target", str(target), str(wheel), cwd=target)
    return target


@pytest.fixture
def run_installed(installed: Path, tmp_path: Path) -> Runner:
    """Run Python on the installed wheel: `-S` so that the environment's .pth files (the
    editable install's finder among them) add nothing, and only the wheel's directory and
    the dependencies' site-packages on the path; the repository is on neither."""
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ATOPEN_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(installed), *dependencies])
    env["ATOPEN_DATA_DIR"] = str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_command([sys.executable, "-S", *args], cwd=elsewhere, env=env, timeout=60)

    return run


def files_under(directory: Path) -> set[str]:
    return {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_the_wheel_carries_every_module_and_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for package in PACKAGES:
        missing = {f"{package}/{name}" for name in files_under(ROOT / package)} - names
        assert not missing, f"not in the wheel: {sorted(missing)}"
    for subpackage in ("server/api", "server/opens", "renderers/layers"):
        assert f"{subpackage}/__init__.py" in names
    assert "server/openapi.json" in names
    templates = {f"{TEMPLATES_PACKAGE}/{name}" for name in files_under(ROOT / "templates")}
    assert templates <= names, f"not in the wheel: {sorted(templates - names)}"
    for kind in ("blocks", "assets", "demo"):
        assert any(name.startswith(f"{TEMPLATES_PACKAGE}/{kind}/") for name in templates)
    # Nothing from the repository's top level but the packages and the dist-info.
    tops = {name.split("/")[0] for name in names}
    assert tops == {*PACKAGES, TEMPLATES_PACKAGE, "atopen-0.1.0.dist-info"}
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "atopen = server.process.cli:main" in archive.read(entry_points).decode()


@pytest.mark.slow
def test_the_installed_wheel_imports_and_finds_its_templates(
    installed: Path, run_installed: Runner
) -> None:
    code = """if True:
        import json
        import renderers.layers, server.api, server.opens
        import server.web.app, server.process.demo
        print(json.dumps({
            "modules": [m.__file__ for m in (server.api, server.opens, renderers.layers)],
            "templates": str(server.web.app.TEMPLATES_DIR),
            "blocks": str(server.process.demo.BLOCKS_DIR),
        }))
    """
    run = run_installed("-c", code)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    for module in found["modules"]:
        assert Path(module).is_relative_to(installed), module
    templates = Path(found["templates"])
    assert templates == installed / TEMPLATES_PACKAGE
    blocks = Path(found["blocks"])
    assert blocks == templates / "blocks"
    starters = {p.name for p in (ROOT / "templates" / "blocks").glob("*.json")}
    assert starters
    assert {p.name for p in blocks.glob("*.json")} == starters
    assert (templates / "demo" / "data.json").is_file()
    assert any((templates / "assets").iterdir())


@pytest.mark.slow
def test_the_installed_wheel_runs_the_command(run_installed: Runner) -> None:
    run = run_installed("-m", "server", "serve", "--help")
    assert run.returncode == 0, run.stderr
    assert "usage: atopen serve" in run.stdout
    run = run_installed("-m", "server", "--help")
    assert run.returncode == 0, run.stderr
    assert "usage: atopen" in run.stdout


def locked() -> dict[str, tuple[Version, bool]]:
    """Name -> (pinned version, whether hashes follow) for each entry of requirements.lock."""
    pins: dict[str, tuple[Version, bool]] = {}
    name = ""
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            requirement, _, version = stripped.rstrip(" \\").partition("==")
            assert version, f"requirements.lock: not pinned with ==: {stripped}"
            name = canonicalize_name(requirement)
            pins[name] = (Version(version), False)
        elif stripped.startswith("--hash=sha256:"):
            pins[name] = (pins[name][0], True)
    return pins


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    """A dependency added to pyproject.toml without `make lock` would install unpinned."""
    pins = locked()
    assert pins
    assert all(hashed for _, hashed in pins.values()), "every pin carries its hashes"
    project = PYPROJECT["project"]
    wanted = [(Requirement(r), "") for r in project["dependencies"]]
    for extra, requirements in project["optional-dependencies"].items():
        wanted += [(Requirement(r), extra) for r in requirements]
    assert any(extra == "loadtest" for _, extra in wanted)
    for requirement, extra in wanted:
        environment = {"extra": extra, "python_version": "3.11", "platform_system": "Linux"}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run `make lock`"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement}: run `make lock`"
        )
