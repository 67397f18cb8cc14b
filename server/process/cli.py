"""The `atopen` command: `serve`, `demo` and `sign`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from server.datastore.embedded_redis import EmbeddedRedis, EmbeddedStoreError
from server.process.sign_csv import TOKEN_COLUMN, RowSigner, SignCsvError, UrlColumn, sign_csv
from server.process.supervisor import WORKER_GRACE_S, Supervisor
from server.settings import Settings, SettingsError, load_settings, require_secret
from server.signing import Signer
from server.web.app import create_app
from server.web.logs import JsonAccessLogger, configure_logging


@contextlib.contextmanager
def store_url(settings: Settings) -> Iterator[str]:
    """`ATOPEN_REDIS_URL`, or a real embedded Redis under the data dir for the run's length,
    started again on the same URL (with its data) whenever it dies."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir / "redis", keep_alive=True) as embedded:
        yield embedded.url


def run(
    settings: Settings,
    redis_url: str,
    prepare: Callable[[web.Application], None] | None = None,
    *,
    reuse_port: bool = False,
    listening: Callable[[web.Application], None] | None = None,
) -> None:
    """Serve in this process until SIGINT/SIGTERM; in-flight requests finish first.

    `prepare` is called on the app before it starts, `listening` once it accepts
    connections."""
    # Render threads hold the GIL for long stretches; the event loop gives it up at every
    # socket call and would wait a whole switch interval (5 ms) to get it back.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = create_app(settings, redis_url=redis_url)
    if prepare is not None:
        prepare(app)
    app.on_startup.append(_freeze_startup_objects)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        backlog=settings.listen_backlog,
        access_log_class=JsonAccessLogger,
        # aiohttp "prints" once every socket listens: the moment for `listening`.
        print=None if listening is None else (lambda _message: listening(app)),
        shutdown_timeout=WORKER_GRACE_S,
        reuse_port=reuse_port,
        loop=_event_loop(),
    )


SWITCH_INTERVAL_S = 0.0005
# The cyclic collector's young generation is collected once this many more containers
# were made than freed (Python's default: 700). The opens in flight and the caches they
# fill keep that count climbing, so the default collected many times a second; one
# collection of this size takes about a millisecond (more only if it frees cycles).
YOUNG_GENERATION_SIZE = 50_000
OLDER_GENERATIONS_EVERY = 20  # collections of the generation below


async def _freeze_startup_objects(app: web.Application) -> None:
    """Keep what startup built (blocks, fonts, modules: ~100,000 objects that live as long
    as the process) out of the cyclic collector: each of its full passes would walk them
    all again, stalling every open in flight for as long. Then collect less often."""
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_SIZE, OLDER_GENERATIONS_EVERY, OLDER_GENERATIONS_EVERY)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it is a dependency on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _serve(args: argparse.Namespace) -> None:
    settings = _with_listen_args(load_settings(), args)
    if args.workers is not None:
        settings = replace(settings, workers=args.workers)
    require_secret(settings)
    require_free_port(settings)
    configure_logging(settings.log_level)
    with store_url(settings) as url:
        Supervisor(settings, url).run()


def _worker(args: argparse.Namespace) -> None:
    """One of `serve`'s workers (started by the supervisor, not by hand)."""
    settings = load_settings()
    require_secret(settings)
    configure_logging(settings.log_level)
    if settings.redis_url is None:
        raise SettingsError("ATOPEN_REDIS_URL: a worker needs the supervisor's store URL")
    run(settings, settings.redis_url, reuse_port=True)


def _demo(args: argparse.Namespace) -> None:
    from server.process.demo import announce_demo, demo_settings, install_demo

    settings = demo_settings(_with_listen_args(load_settings(), args))
    require_free_port(settings)
    configure_logging(settings.log_level)
    with store_url(settings) as url:
        run(settings, url, install_demo, listening=announce_demo)


def _sign(args: argparse.Namespace) -> None:
    settings = load_settings()
    require_secret(settings)
    signer = Signer(settings.secrets)
    if args.csv is not None:
        _sign_csv(args, signer, settings.base_url)
        return
    if not args.urls:
        raise ValueError("give URLs to sign, or --csv IN.csv --out OUT.csv")
    for url in args.urls:
        signed = signer.sign_url(url)
        print(settings.base_url + signed if signed.startswith("/") else signed)


def _sign_csv(args: argparse.Namespace, signer: Signer, base_url: str) -> None:
    if args.urls:
        raise ValueError("give URLs to sign or --csv, not both")
    if args.out is None:
        raise ValueError("--csv needs --out OUT.csv, where the signed list is written")
    rows = RowSigner(
        signer,
        base_url,
        recipient_column=args.recipient_column,
        urls=[UrlColumn.parse(text) for text in args.url],
        tokens=args.tokens or not args.url,
    )
    try:
        count = sign_csv(Path(args.csv), Path(args.out), rows)
    except OSError as exc:
        raise SignCsvError(f"{exc.filename}: {exc.strerror}") from None
    print(f"atopen: {count} rows written to {args.out}", file=sys.stderr)


class PortInUseError(Exception):
    """Something already listens on the address atopen was asked to listen on."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            f"{settings.host}:{settings.port} is in use: stop what listens there, or choose "
            "another port with --port or ATOPEN_PORT"
        )


def require_free_port(settings: Settings) -> None:
    """PortInUseError if anything listens on the address. Workers bind with SO_REUSEPORT,
    which would let them join another server of the same user on that port and share
    its traffic: a plain bind first tells a port in use from one that is free."""
    try:
        info = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return  # an unknown host: binding will say so
    with socket.socket(info[0], socket.SOCK_STREAM) as probe:
        # Connections of an earlier run in TIME_WAIT do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(info[4])
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(settings) from None
            raise


def _with_listen_args(settings: Settings, args: argparse.Namespace) -> Settings:
    if args.host:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="atopen", description="Render email content at the moment an email is opened."
    )
    # `worker` is the supervisor's, not a user's: left out of the list and the help.
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,demo,sign}")
    for name, handler, text in (
        ("serve", _serve, "serve with settings from ATOPEN_* environment variables"),
        ("demo", _demo, "serve on the embedded store with demo blocks and data loaded"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--host", help="listen address (default: ATOPEN_HOST)")
        command.add_argument("--port", type=int, help="listen port (default: ATOPEN_PORT)")
        command.set_defaults(handler=handler)
        if name == "serve":
            command.add_argument(
                "--workers",
                type=int,
                help="worker processes (default: ATOPEN_WORKERS, else the number of CPUs)",
            )
    worker = commands.add_parser("worker")
    worker.set_defaults(handler=_worker)
    sign = commands.add_parser(
        "sign",
        help="sign email-facing URLs, or a recipient list, with ATOPEN_SECRET",
        description="Sign URLs given as arguments, or add recipient tokens (and signed URLs) "
        "to every row of a CSV file.",
    )
    sign.add_argument("urls", nargs="*", metavar="PATH?QUERY", help="e.g. '/i/hero.png?r=u1'")
    sign.add_argument("--csv", metavar="IN.csv", help="a recipient list, first line the columns")
    sign.add_argument("--out", metavar="OUT.csv", help="where the list is written, rows added to")
    sign.add_argument(
        "--recipient-column",
        default="recipient",
        metavar="COLUMN",
        help="the column of recipient ids (default: recipient)",
    )
    sign.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="COLUMN=PATH?QUERY",
        help="add a column of signed URLs, {column} standing for each row's value, e.g. "
        "'hero_image=/i/hero.png?r={recipient}&m.coupon={coupon}' (repeatable)",
    )
    sign.add_argument(
        "--tokens",
        action="store_true",
        help=f"add the {TOKEN_COLUMN} column (the default when no --url is given)",
    )
    sign.set_defaults(handler=_sign)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (SettingsError, EmbeddedStoreError, ValueError, PortInUseError) as exc:
        print(f"atopen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
