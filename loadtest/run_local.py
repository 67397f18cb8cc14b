"""`make loadtest`: a bounded, headless locust run against a local atopen.

Starts a real store and `atopen serve --workers N` on loopback, registers the starter
blocks, seeds a population, runs the chosen locust shape for a bounded time and writes
locust's HTML and CSV reports to `loadtest/reports/`. To load a real deployment instead,
see loadtest/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from loadtest.bench_serve import TOKEN, api, atopen_server
from loadtest.population import Population, seed
from server.datastore.embedded_redis import EmbeddedRedis
from server.web.app import TEMPLATES_DIR

REPORTS = Path(__file__).resolve().parent / "reports"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shape", choices=("spike", "refetch", "steady"), default="spike")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--peak-users", type=int, default=100)
    args = parser.parse_args()
    REPORTS.mkdir(exist_ok=True)
    secret = secrets.token_urlsafe(16)
    os.environ["ATOPEN_SECRET"] = secret
    with (
        tempfile.TemporaryDirectory(prefix="atopen-load-") as tmp,
        EmbeddedRedis(Path(tmp) / "store", persistent=False) as store,
        atopen_server(store.url, args.workers, Path(tmp) / "data", secret) as server,
    ):
        blocks = sorted(TEMPLATES_DIR.glob("blocks/*.json"))
        for path in blocks:
            api(server.port, "PUT", f"/api/v1/blocks/{path.stem}", orjson.loads(path.read_bytes()))
        population = Population(args.recipients)
        asyncio.run(seed(f"http://127.0.0.1:{server.port}", TOKEN, population))
        env = {
            **os.environ,
            "ATOPEN_LOAD_SHAPE": args.shape,
            "ATOPEN_LOAD_SECONDS": str(args.seconds),
            "ATOPEN_LOAD_RECIPIENTS": str(args.recipients),
            "ATOPEN_LOAD_PEAK_USERS": str(args.peak_users),
            "ATOPEN_LOAD_BLOCKS": ",".join(p.stem for p in blocks),
        }
        locust = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(Path(__file__).with_name("locustfile.py")),
            "--headless",
            "--host",
            f"http://127.0.0.1:{server.port}",
            "--run-time",
            f"{args.seconds + 10}s",
            "--stop-timeout",
            "10",
            "--html",
            str(REPORTS / f"{args.shape}.html"),
            "--csv",
            str(REPORTS / args.shape),
            "--only-summary",
        ]
        code = subprocess.call(locust, env=env)  # noqa: S603 - our own command
    print(f"reports: {REPORTS}/{args.shape}.html and {args.shape}_stats.csv")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
