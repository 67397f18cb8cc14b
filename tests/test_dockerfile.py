"""The Dockerfile, checked as far as possible without a Docker engine.

What it copies exists (and is not excluded from the build context), the copied layout
runs its CMD, the healthcheck command works against a real server, it does not run as
root, and the settings it bakes in are the documented ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    name: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        name, _, args = whole.partition(" ")
        instructions.append(Instruction(name.upper(), args.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


INSTRUCTIONS = parse(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage() -> list[Instruction]:
    starts = [i for i, ins in enumerate(INSTRUCTIONS) if ins.name == "FROM"]
    assert len(starts) >= 2, "expected a multi-stage build"
    return INSTRUCTIONS[starts[-1] + 1 :]


def only(name: str, stage: list[Instruction]) -> Instruction:
    found = [ins for ins in stage if ins.name == name]
    assert found, f"no {name} in the runtime stage"
    return found[-1]


def copies(stage: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not `--from=`)."""
    result = []
    for ins in stage:
        if ins.name not in ("COPY", "ADD"):
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        result.append((paths[:-1], paths[-1]))
    return result


def env_values(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for ins in stage:
        if ins.name == "ENV":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                values[key] = value
    return values


def ignored_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def exec_form(ins: Instruction, prefix: str = "") -> list[str]:
    args = ins.args
    if prefix:
        args = args[args.index(prefix) + len(prefix) :].strip()
    command = json.loads(args)
    assert isinstance(command, list)
    assert all(isinstance(w, str) for w in command)
    return command


# ------------------------------------------------------------------ tests


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    every_stage_copies = copies(INSTRUCTIONS)
    assert every_stage_copies
    ignored = ignored_patterns()
    for sources, _ in every_stage_copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
            top = PurePosixPath(source).parts[0]
            assert top not in ignored, f"COPY {source}: excluded by .dockerignore"


def test_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = ignored_patterns()
    for name in (".git", ".venv", ".atopen"):
        assert name in ignored, f".dockerignore should exclude {name}"


def test_runtime_copies_the_source_tree_beside_its_templates() -> None:
    """`server.templates_dir` takes `templates/` beside the `server` package when it is
    there, as in a checkout: keep that layout."""
    stage = final_stage()
    workdir = only("WORKDIR", stage).args
    destinations = {dest.rstrip("/") for _, dest in copies(stage)}
    for package in ("server", "renderers", "content_sources", "templates"):
        assert f"{workdir}/{package}" in destinations, f"{package} is not copied to {workdir}"


def test_the_cmd_runs_from_the_copied_layout(tmp_path: Path) -> None:
    """Lay the copied files out as in the image and run the CMD (with --help) there."""
    stage = final_stage()
    workdir = PurePosixPath(only("WORKDIR", stage).args)
    app = tmp_path / "app"
    for sources, dest in copies(stage):
        target = app / PurePosixPath(dest).relative_to(workdir)
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    command = exec_form(only("CMD", stage))
    assert command == ["python", "-m", "server", "serve"]
    run = subprocess.run(  # noqa: S603 - a fixed command
        [sys.executable, *command[1:], "--help"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "usage: atopen serve" in run.stdout
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import server.app as a; print(a.__file__); print(a.TEMPLATES_DIR)",
        ],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module_file, templates = where.stdout.split()
    assert Path(module_file) == app / "server" / "app.py"
    assert Path(templates) == app / "templates"
    assert sorted((app / "templates" / "blocks").glob("*.json"))


def test_runs_as_a_user_that_is_not_root() -> None:
    stage = final_stage()
    user = only("USER", stage).args.split(":")[0]
    assert user not in ("root", "0", "")
    created = " ".join(ins.args for ins in stage if ins.name == "RUN")
    assert re.search(rf"useradd\b[^&;]*\b{re.escape(user)}\b", created), "user is not created"
    uid = re.search(r"--uid\s+(\d+)", created)
    assert uid is not None
    assert int(uid.group(1)) != 0
    # Everything after USER runs unprivileged, so the data dir must be made before it.
    position = {id(ins): i for i, ins in enumerate(stage)}
    user_at = position[id(only("USER", stage))]
    assert all(position[id(ins)] < user_at for ins in stage if ins.name == "RUN")


def test_runtime_settings() -> None:
    stage = final_stage()
    env = env_values(stage)
    expected = {
        "PYTHONUNBUFFERED": "1",
        "MALLOC_ARENA_MAX": "2",
        "ATOPEN_HOST": "0.0.0.0",  # noqa: S104 - listening on every interface in a container
        "ATOPEN_DATA_DIR": "/data",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert only("VOLUME", stage).args == "/data"
    assert only("EXPOSE", stage).args == "8080"
    assert INSTRUCTIONS[0].name in ("ARG", "FROM")
    bases = [ins.args for ins in INSTRUCTIONS if ins.name == "FROM"]
    assert all("python:3.11-slim" in b or "${PYTHON_IMAGE}" in b for b in bases)


def test_builder_installs_the_embedded_extra(tmp_path: Path) -> None:
    """The builder's requirement list is the project's dependencies plus `embedded`."""
    run = next(ins.args for ins in INSTRUCTIONS if ins.name == "RUN" and "tomllib" in ins.args)
    snippet = re.search(r'python -c "(.*?)" >', run)
    assert snippet is not None
    code = snippet.group(1).replace("/build/pyproject.toml", str(ROOT / "pyproject.toml"))
    out = subprocess.run(  # noqa: S603 - the Dockerfile's own snippet
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["embedded"]
    assert out.stdout.splitlines() == expected


def test_builder_installs_at_the_locked_versions_and_hashes(tmp_path: Path) -> None:
    """The lock constrains the install, and uv (which checks a constraint's hashes) is
    itself installed from the lock with its hashes."""
    builder = INSTRUCTIONS[: [i for i, ins in enumerate(INSTRUCTIONS) if ins.name == "FROM"][-1]]
    copied = [sources for sources, _ in copies(builder)]
    assert any("requirements.lock" in sources for sources in copied)
    run = next(ins.args for ins in builder if ins.name == "RUN" and "tomllib" in ins.args)
    steps = [step.strip() for step in run.split("&&")]
    install = steps[-1].split()
    assert install[:3] == ["uv", "pip", "install"]
    assert install[install.index("-c") + 1] == "/build/requirements.lock"
    assert install[install.index("-r") + 1] == "/build/requirements.txt"
    assert "pip install --require-hashes -r /build/uv.txt" in steps
    # The step that cuts uv's entry out of the lock, run on the real lock.
    (cut,) = [s for s in steps if s.startswith("awk ")]
    words = shlex.split(cut)
    assert words[-2:] == [">", "/build/uv.txt"]
    lock = str(ROOT / "requirements.lock")
    command = [lock if w == "/build/requirements.lock" else w for w in words[:-2]]
    entry = subprocess.run(  # noqa: S603 - the Dockerfile's own command
        command, capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    assert re.fullmatch(r"uv==[\w.]+ \\", entry[0])
    assert len(entry) > 2
    assert all(re.fullmatch(r"\s+--hash=sha256:[0-9a-f]{64}( \\)?", ln) for ln in entry[1:])
    assert not entry[-1].endswith("\\")


async def test_healthcheck_command_passes_against_a_running_server(
    client: TestClient[Any, Any],
) -> None:
    command = exec_form(only("HEALTHCHECK", final_stage()), prefix="CMD")
    assert command[0] == "python"
    assert "/healthz" in " ".join(command)

    async def check(port: int) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *command[1:],
            env={"ATOPEN_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(process.wait(), timeout=30)

    port = client.server.port
    assert port is not None
    assert await check(port) == 0
    await client.close()
    assert await check(port) != 0


@pytest.mark.parametrize("name", ["HEALTHCHECK", "CMD"])
def test_exec_form(name: str) -> None:
    """Exec form: signals reach Python (graceful shutdown) and no shell is needed."""
    ins = only(name, final_stage())
    exec_form(ins, prefix="CMD" if name == "HEALTHCHECK" else "")
