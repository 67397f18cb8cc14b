"""The `atopen` command as a user runs it: real processes, real store, real HTTP."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from support import decode, free_port, run_command

from server.signing import Signer

# Slow, left out of `make test-fast`: they run `atopen` commands as processes.
pytestmark = pytest.mark.slow


def atopen(
    *args: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, "-m", "server", *args], env=env, timeout=timeout)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOPEN_")}
    env["ATOPEN_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def test_sign_prints_urls_the_service_verifies(tmp_path: Path) -> None:
    env = clean_env(tmp_path, ATOPEN_SECRET="k1", ATOPEN_PUBLIC_URL="https://img.example.com")
    result = atopen("sign", "/i/hero.png?r=u1&m.name=Ann Nowak", "/c/hero?r=u1", env=env)
    assert result.returncode == 0, result.stderr
    image, click = result.stdout.split()
    for url in (image, click):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == "https://img.example.com"
        assert Signer(["k1"]).verify(parts.path, parse_qsl(parts.query, keep_blank_values=True))


@pytest.mark.parametrize(
    ("env_changes", "named"),
    [
        ({}, "ATOPEN_SECRET"),
        ({"ATOPEN_SECRET": "k", "ATOPEN_PORT": "eighty"}, "ATOPEN_PORT"),
        ({"ATOPEN_SECRET": "k", "ATOPEN_REDIS_URL": "http://x"}, "ATOPEN_REDIS_URL"),
        ({"ATOPEN_SECRET": "k", "ATOPEN_RENDER_DEADLINE_MS": "0"}, "ATOPEN_RENDER_DEADLINE_MS"),
        ({"ATOPEN_SECRET": "k,,j"}, "ATOPEN_SECRET"),
        ({"ATOPEN_SECRET": "k", "ATOPEN_FETCH_ALLOW": "10.0.0.1/8"}, "ATOPEN_FETCH_ALLOW"),
        (
            {"ATOPEN_SECRET": "k", "ATOPEN_REDIS_MAX_CONNECTIONS": "2"},
            "ATOPEN_REDIS_MAX_CONNECTIONS",
        ),
    ],
)
def test_serve_refuses_bad_settings_naming_the_variable(
    tmp_path: Path, env_changes: dict[str, str], named: str
) -> None:
    result = atopen("serve", env=clean_env(tmp_path, **env_changes))
    assert result.returncode == 2
    assert named in result.stderr


def test_demo_serves_signed_images_and_stops_its_store(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, ATOPEN_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    page = tmp_path / "data" / "demo-email.html"
    try:
        deadline = time.monotonic() + 30
        while not page.exists():
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the demo page never appeared"
            time.sleep(0.1)
        html = page.read_text()
        images = [u.replace("&amp;", "&") for u in re.findall(r'src="([^"]+)"', html)]
        assert images
        variants = set()
        for url in images:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - localhost
                assert response.status == 200
                variants.add(response.headers["X-Atopen-Variant"])
                assert decode(response.read()).width == 600
        assert {"cart", "thanks", "default"} <= variants
        studio = f"http://127.0.0.1:{port}/studio"
        with urllib.request.urlopen(studio, timeout=10) as response:
            assert b"atopen studio" in response.read()
        store_pid = int((tmp_path / "data" / "redis" / "redis.pid").read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "demo email page" in output
    assert f"studio:          http://127.0.0.1:{port}/studio" in output
    # The banner's own `sign` line runs as printed, and signs for the port it serves on.
    sign_line = next(line.strip() for line in output.splitlines() if " sign '" in line)
    words = shlex.split(sign_line)
    assignments = dict(word.split("=", 1) for word in words if "=" in word.split("/")[0])
    command = [word for word in words if "=" not in word.split("/")[0]]
    # Run as a newcomer's shell would: without the demo's own port in the environment.
    shell_env = {k: v for k, v in env.items() if k != "ATOPEN_PORT"}
    signed = subprocess.run(  # noqa: S603 - the command our banner printed
        command, env={**shell_env, **assignments}, capture_output=True, text=True
    )
    assert signed.returncode == 0, signed.stderr
    signed_url = signed.stdout.strip()
    assert signed_url.startswith(f"http://127.0.0.1:{port}/i/cart-reminder.png?r=ann&sig=")
    deadline = time.monotonic() + 10
    while _alive(store_pid):
        assert time.monotonic() < deadline, "the embedded store outlived the demo"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by an unrelated parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_named_not_a_traceback(tmp_path: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(tmp_path, ATOPEN_PORT=str(port), ATOPEN_SECRET="k")
        result = atopen(command, env=env)
    assert result.returncode == 2
    assert f"127.0.0.1:{port} is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_only_the_commands_a_user_runs(tmp_path: Path) -> None:
    result = atopen("--help", env=clean_env(tmp_path))
    assert result.returncode == 0
    assert "{serve,demo,sign}" in result.stdout
    assert "worker" not in result.stdout
    assert "SUPPRESS" not in result.stdout
