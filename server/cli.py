"""The `atopen` command: `serve`, `demo` and `sign`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web

from server.app import create_app
from server.embedded_store import EmbeddedRedis, EmbeddedStoreError
from server.logs import JsonAccessLogger, configure_logging
from server.settings import Settings, SettingsError, load_settings, require_secret
from server.signing import Signer


@contextlib.contextmanager
def store_url(settings: Settings) -> Iterator[str]:
    """`ATOPEN_REDIS_URL`, or a real embedded Redis under the data dir for the run's length."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir / "redis") as embedded:
        yield embedded.url


def run(settings: Settings, prepare: Callable[[web.Application], None] | None = None) -> None:
    """Serve until interrupted; in-flight requests finish on SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    with store_url(settings) as url:
        app = create_app(settings, redis_url=url)
        if prepare is not None:
            prepare(app)
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            access_log_class=JsonAccessLogger,
            print=None,
            shutdown_timeout=10.0,
        )


def _serve(args: argparse.Namespace) -> None:
    settings = _with_listen_args(load_settings(), args)
    require_secret(settings)
    run(settings)


def _demo(args: argparse.Namespace) -> None:
    from server.demo import demo_settings, install_demo

    settings = demo_settings(_with_listen_args(load_settings(), args))
    run(settings, install_demo)


def _sign(args: argparse.Namespace) -> None:
    settings = load_settings()
    require_secret(settings)
    signer = Signer(settings.secrets)
    for url in args.urls:
        signed = signer.sign_url(url)
        print(settings.base_url + signed if signed.startswith("/") else signed)


def _with_listen_args(settings: Settings, args: argparse.Namespace) -> Settings:
    from dataclasses import replace

    if args.host:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="atopen", description="Render email content at the moment an email is opened."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, text in (
        ("serve", _serve, "serve with settings from ATOPEN_* environment variables"),
        ("demo", _demo, "serve on the embedded store with demo blocks and data loaded"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--host", help="listen address (default: ATOPEN_HOST)")
        command.add_argument("--port", type=int, help="listen port (default: ATOPEN_PORT)")
        command.set_defaults(handler=handler)
    sign = commands.add_parser(
        "sign", help="sign email-facing URLs with ATOPEN_SECRET", description="sign URLs"
    )
    sign.add_argument("urls", nargs="+", metavar="PATH?QUERY", help="e.g. '/i/hero.png?r=u1'")
    sign.set_defaults(handler=_sign)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (SettingsError, EmbeddedStoreError, ValueError) as exc:
        print(f"atopen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
