"""`atopen serve`: N worker processes sharing one port, kept alive by a supervisor.

Each worker is a full atopen process (its own event loop, render pool and caches)
listening on the same address with SO_REUSEPORT, so the kernel spreads connections
across them and every core renders. The supervisor starts the embedded store once (when
no `ATOPEN_REDIS_URL` is given), starts the workers, replaces a worker that dies, and on
SIGTERM or SIGINT asks every worker to finish its in-flight requests before it stops
the store.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from prometheus_client import multiprocess as prometheus_multiprocess

from server.datastore.child_process import die_with_parent
from server.metrics import MULTIPROCESS_DIR_VARIABLE
from server.settings import Settings

log = logging.getLogger("atopen.supervisor")

# Worker shutdown: aiohttp's own grace period for in-flight requests, plus a margin.
WORKER_GRACE_S = 10.0
STOP_MARGIN_S = 5.0
# A worker that keeps dying right after starting is restarted ever more slowly.
RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 10.0


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    failures: int = 0


class Supervisor:
    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._settings = settings
        self._redis_url = redis_url
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._metrics_dir = settings.data_dir / "metrics"

    def run(self) -> None:
        """Start the workers and watch them until told to stop."""
        self._prepare_metrics_dir()
        for index in range(self._settings.worker_count):
            self._start(index, failures=0)
        previous = {
            sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while not self._stopping:
                self._replace_dead_workers()
                time.sleep(0.2)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _prepare_metrics_dir(self) -> None:
        # Samples of an earlier run would be summed with this one's.
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        self._metrics_dir.mkdir(parents=True)

    def _environment(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env["ATOPEN_REDIS_URL"] = self._redis_url
        env["ATOPEN_HOST"] = self._settings.host
        env["ATOPEN_PORT"] = str(self._settings.port)
        env["ATOPEN_WORKERS"] = str(self._settings.worker_count)
        env[MULTIPROCESS_DIR_VARIABLE] = str(self._metrics_dir)
        return env

    def _start(self, index: int, *, failures: int) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "worker"],
            env=self._environment(index),
            preexec_fn=die_with_parent(),
        )
        self._workers[index] = _Worker(index, process, failures=failures)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _replace_dead_workers(self) -> None:
        for index, worker in list(self._workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            # Its live gauges (the queue depth) must stop counting in the sums.
            prometheus_multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                worker.process.pid, str(self._metrics_dir)
            )
            lived = time.monotonic() - worker.started
            failures = 0 if lived > STABLE_AFTER_S else worker.failures + 1
            delay = min(RESTART_BACKOFF_MAX_S, 0.5 * (2**failures)) if failures else 0.0
            log.error(
                "worker %d (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                index,
                worker.process.pid,
                code,
                lived,
                delay,
            )
            del self._workers[index]
            if delay:
                time.sleep(delay)
            if not self._stopping:
                self._start(index, failures=failures)

    def _stop_all(self) -> None:
        """SIGTERM every worker (they finish in-flight requests), then wait; kill stragglers."""
        for worker in self._workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_GRACE_S + STOP_MARGIN_S
        for worker in self._workers.values():
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
        self._workers.clear()
