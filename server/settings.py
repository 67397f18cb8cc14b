"""Settings: every knob is an `ATOPEN_*` environment variable with a default.

Values are read and validated once, at startup; a bad value stops the start with a
message that names the variable, so nothing is discovered at open time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from urllib.parse import urlsplit

from content_sources import SourceSettings
from content_sources.client_address import parse_trusted_proxies
from content_sources.geo import GeoDatabaseError, open_geoip
from content_sources.outbound import parse_allow
from server.api_tokens import ApiToken, Scope, all_tokens, parse_scoped_tokens
from server.cpus import usable_cpus


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


# Render threads per CPU of a worker, unless ATOPEN_RENDER_THREADS says otherwise.
RENDER_THREADS_PER_CPU = 2


@dataclass(frozen=True, slots=True)
class Settings:
    secrets: tuple[str, ...] = ()
    api_tokens: tuple[str, ...] = ()
    # Named tokens with scopes (`ATOPEN_API_TOKENS`); `api_tokens` have full access.
    scoped_api_tokens: tuple[ApiToken, ...] = ()
    # The audit log of API writes kept in the store: at most this many entries, none
    # older than this many days (the log lines go wherever the logs go).
    audit_max_entries: int = 100_000
    audit_retention_days: int = 365
    redis_url: str | None = None
    data_dir: Path = Path(".atopen")
    host: str = "127.0.0.1"
    port: int = 8080
    # Connections the kernel may hold for each worker until it accepts them. A send's
    # first wave opens thousands at once (each proxy many); a full queue drops them and
    # clients retry a second or more later. The kernel caps it at net.core.somaxconn.
    listen_backlog: int = 4096
    # Connections a process keeps to the store at most (to each node of a cluster): its
    # commands past them wait for one to come free. The opens' pipelined reads have one
    # more of their own.
    redis_max_connections: int = 100
    public_url: str = ""
    # How long an open may take: within what mail clients and their proxies wait for an
    # image (seconds; Camo, GitHub's image proxy, waits 10 s), not a latency target.
    # Below capacity every open is drawn well within it; above, it is how much queue
    # the pool keeps, and the opens past that get the default at once. One second: a
    # burst of up to about two thirds of a second's capacity is drawn whole, and the
    # right images still come within a second when more opens arrive than the box draws.
    render_deadline_ms: int = 1000
    # How old the inventory an open sees may be: a worker reads a block's items once
    # for all its opens in this interval (at 6,500 opens a second, a read per open was
    # most of the store's work and a tenth of an open's). 0: every open reads them.
    inventory_max_age_ms: int = 100
    events_max_per_recipient: int = 500
    events_retention_days: int = 90
    click_memory_days: int = 30
    # Records of opens and clicks (docs/records.md): the newest this many, none older
    # than this many days. 0 records nothing (nor reports beyond impressions by variant,
    # nor engagement).
    records_max: int = 1_000_000
    records_days: int = 30
    api_max_body_bytes: int = 8 * 1024 * 1024
    log_level: str = "INFO"
    workers: int = 0
    render_threads: int = 0
    # Opens that may hold a place in a worker's render queue beyond those rendering: a
    # bound on memory. Time is bounded by the deadline, which refuses at once the opens
    # the queue could not draw in time.
    render_queue: int = 4096
    # How long a connection whose open was refused at admission is not read from: a
    # client that asks again as soon as it is answered would otherwise turn each refusal
    # into the next (server/web/backpressure.py). 0: read at once.
    refusal_pause_ms: int = 250
    cache_memory_mb: int = 64
    cache_ttl_s: int = 3600
    metrics_tokens: tuple[str, ...] = ()
    metrics_port: int = 0
    fonts_dir: Path | None = None
    remote_image_connect_timeout_ms: int = 1000
    remote_image_read_timeout_ms: int = 2000
    remote_image_max_bytes: int = 5 * 1024 * 1024
    remote_image_max_pixels: int = 20_000_000
    remote_image_cache_s: int = 300
    remote_image_cache_mb: int = 64
    geoip_db: Path | None = None
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    # Networks live data and remote images may reach besides public addresses.
    fetch_allow: tuple[IPv4Network | IPv6Network, ...] = ()
    last_seen_days: int = 180
    stores_max_km: int = 1000
    segments_interval_s: int = 3600
    segments_window_days: int = 365
    segments_history_days: int = 730
    # Values HTTP data sources' header templates read as `secrets.NAME`.
    data_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.metrics_port and self.metrics_port == self.port:
            raise SettingsError(
                f"ATOPEN_METRICS_PORT: {self.metrics_port} is the service port too; "
                "give the metrics a port of their own, or 0 for none"
            )

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def worker_count(self) -> int:
        """By default one worker per CPU this process may use (see `server.cpus`)."""
        return self.workers or usable_cpus()

    @property
    def worker_cpus(self) -> float:
        """The CPUs each worker's renders may use at once: the usable CPUs shared out
        among the workers (a share of one when there are more workers than CPUs)."""
        return usable_cpus() / self.worker_count

    @property
    def render_thread_count(self) -> int:
        """Threads per process: by default two for each of the worker's CPUs. Pillow lets
        go of the interpreter lock while it rasterises text and compresses, and a second
        thread's render goes on meantime: on 2 CPUs and 2 workers, two threads each drew
        10-18 % more images a second than one, for the same CPU (docs/performance.md)."""
        return self.render_threads or max(1, round(RENDER_THREADS_PER_CPU * self.worker_cpus))

    @property
    def sources(self) -> SourceSettings:
        return SourceSettings(
            events_max_per_recipient=self.events_max_per_recipient,
            click_memory_days=self.click_memory_days,
            stores_max_km=self.stores_max_km,
        )

    @property
    def api_access(self) -> tuple[ApiToken, ...]:
        """Every token the API takes, with its name and scopes."""
        return all_tokens(self.api_tokens, self.scoped_api_tokens)

    @property
    def metrics_token_list(self) -> tuple[str, ...]:
        """Who may read /metrics: its own tokens, else the API's that may read."""
        if self.metrics_tokens:
            return self.metrics_tokens
        return tuple(t.token for t in self.api_access if t.allows(Scope.READ))

    @property
    def assets_dir(self) -> Path:
        """Where marketers put image assets: `ATOPEN_DATA_DIR/assets`."""
        return self.data_dir / "assets"


def _csv(name: str, raw: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in raw.split(","))
    if any(not v for v in values):
        raise SettingsError(f"{name}: empty entry in comma-separated list")
    return values


def _scoped_tokens(name: str, raw: str) -> tuple[ApiToken, ...]:
    try:
        return parse_scoped_tokens(name, raw)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name}: {value} is outside {lo}..{hi}")
        return value

    return parse


def _redis_url(name: str, raw: str) -> str:
    from server.datastore.redis_client import StoreUrlError, cluster_seeds, is_cluster_url

    if is_cluster_url(raw):
        try:
            cluster_seeds(raw)
        except StoreUrlError as exc:
            raise SettingsError(f"{name}: {exc}") from None
        return raw
    scheme = urlsplit(raw).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"{name}: expected a redis://, rediss://, unix:// or redis+cluster:// URL, got {raw!r}"
        )
    return raw


def _public_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name}: expected an absolute http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"{name}: expected DEBUG, INFO, WARNING or ERROR, got {raw!r}")
    return level


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name}: must not be empty")
    return raw.strip()


def _directory(name: str, raw: str) -> Path:
    path = Path(raw.strip())
    if not path.is_dir():
        raise SettingsError(f"{name}: {raw!r} is not a directory")
    return path


def _geoip_db(name: str, raw: str) -> Path:
    """The file must open as a City database now, not at the first open."""
    path = Path(raw.strip())
    try:
        open_geoip(path).close()
    except GeoDatabaseError as exc:
        raise SettingsError(str(exc)) from None
    return path


def _trusted_proxies(name: str, raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    try:
        return parse_trusted_proxies(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _fetch_allow(name: str, raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    try:
        return parse_allow(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _segments_interval(name: str, raw: str) -> int:
    value = _int(0, 604_800)(name, raw)
    if 0 < value < 60:
        raise SettingsError(f"{name}: {value} is below 60 seconds (0 turns the job off)")
    return value


# `ATOPEN_SECRET_<NAME>`: a secret for HTTP data sources' headers (not a signing key).
_DATA_SECRET = re.compile(r"^ATOPEN_SECRET_([A-Z0-9_]+)$")


# variable name -> (Settings field, parser). docs/configuration.md lists these.
_VARIABLES: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "ATOPEN_SECRET": ("secrets", _csv),
    "ATOPEN_API_TOKEN": ("api_tokens", _csv),
    "ATOPEN_API_TOKENS": ("scoped_api_tokens", _scoped_tokens),
    "ATOPEN_AUDIT_MAX_ENTRIES": ("audit_max_entries", _int(100, 10_000_000)),
    "ATOPEN_AUDIT_RETENTION_DAYS": ("audit_retention_days", _int(1, 3650)),
    "ATOPEN_REDIS_URL": ("redis_url", _redis_url),
    "ATOPEN_REDIS_MAX_CONNECTIONS": ("redis_max_connections", _int(8, 10_000)),
    "ATOPEN_DATA_DIR": ("data_dir", lambda _n, raw: Path(raw)),
    "ATOPEN_HOST": ("host", _text),
    "ATOPEN_PORT": ("port", _int(0, 65535)),
    "ATOPEN_LISTEN_BACKLOG": ("listen_backlog", _int(1, 65535)),
    "ATOPEN_PUBLIC_URL": ("public_url", _public_url),
    "ATOPEN_RENDER_DEADLINE_MS": ("render_deadline_ms", _int(10, 60_000)),
    "ATOPEN_INVENTORY_MAX_AGE_MS": ("inventory_max_age_ms", _int(0, 60_000)),
    "ATOPEN_EVENTS_MAX_PER_RECIPIENT": ("events_max_per_recipient", _int(1, 100_000)),
    "ATOPEN_EVENTS_RETENTION_DAYS": ("events_retention_days", _int(1, 3650)),
    "ATOPEN_CLICK_MEMORY_DAYS": ("click_memory_days", _int(1, 3650)),
    "ATOPEN_RECORDS_MAX": ("records_max", _int(0, 1_000_000_000)),
    "ATOPEN_RECORDS_DAYS": ("records_days", _int(1, 3650)),
    "ATOPEN_API_MAX_BODY_BYTES": ("api_max_body_bytes", _int(1024, 1 << 30)),
    "ATOPEN_LOG_LEVEL": ("log_level", _log_level),
    "ATOPEN_WORKERS": ("workers", _int(0, 256)),
    "ATOPEN_RENDER_THREADS": ("render_threads", _int(0, 256)),
    "ATOPEN_RENDER_QUEUE": ("render_queue", _int(0, 100_000)),
    "ATOPEN_REFUSAL_PAUSE_MS": ("refusal_pause_ms", _int(0, 10_000)),
    "ATOPEN_CACHE_MEMORY_MB": ("cache_memory_mb", _int(1, 1_000_000)),
    "ATOPEN_CACHE_TTL_S": ("cache_ttl_s", _int(1, 30 * 86_400)),
    "ATOPEN_METRICS_TOKEN": ("metrics_tokens", _csv),
    "ATOPEN_METRICS_PORT": ("metrics_port", _int(0, 65535)),
    "ATOPEN_FONTS_DIR": ("fonts_dir", _directory),
    "ATOPEN_REMOTE_IMAGE_CONNECT_TIMEOUT_MS": ("remote_image_connect_timeout_ms", _int(50, 10_000)),
    "ATOPEN_REMOTE_IMAGE_READ_TIMEOUT_MS": ("remote_image_read_timeout_ms", _int(50, 30_000)),
    "ATOPEN_REMOTE_IMAGE_MAX_BYTES": ("remote_image_max_bytes", _int(1024, 50 * 1024 * 1024)),
    "ATOPEN_REMOTE_IMAGE_MAX_PIXELS": ("remote_image_max_pixels", _int(1, 40_000_000)),
    "ATOPEN_REMOTE_IMAGE_CACHE_S": ("remote_image_cache_s", _int(0, 86_400)),
    "ATOPEN_REMOTE_IMAGE_CACHE_MB": ("remote_image_cache_mb", _int(0, 4096)),
    "ATOPEN_GEOIP_DB": ("geoip_db", _geoip_db),
    "ATOPEN_TRUSTED_PROXIES": ("trusted_proxies", _trusted_proxies),
    "ATOPEN_FETCH_ALLOW": ("fetch_allow", _fetch_allow),
    "ATOPEN_LAST_SEEN_DAYS": ("last_seen_days", _int(1, 3650)),
    "ATOPEN_STORES_MAX_KM": ("stores_max_km", _int(1, 20_000)),
    "ATOPEN_SEGMENTS_INTERVAL_S": ("segments_interval_s", _segments_interval),
    "ATOPEN_SEGMENTS_WINDOW_DAYS": ("segments_window_days", _int(30, 3650)),
    "ATOPEN_SEGMENTS_HISTORY_DAYS": ("segments_history_days", _int(180, 7300)),
}
# Every variable read, as docs/configuration.md lists them.
VARIABLE_NAMES = tuple(_VARIABLES)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every `ATOPEN_*` variable; unset or empty means the default."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (attr, parse) in _VARIABLES.items():
        raw = env.get(name, "")
        if raw.strip():
            values[attr] = parse(name, raw)
    values["data_secrets"] = {
        match.group(1): value
        for name, value in env.items()
        if (match := _DATA_SECRET.match(name)) is not None and value
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    if set(settings.api_tokens) & {t.token for t in settings.scoped_api_tokens}:
        raise SettingsError(
            "ATOPEN_API_TOKENS: a token is in ATOPEN_API_TOKEN too; give each token once"
        )
    if settings.segments_history_days < settings.segments_window_days:
        raise SettingsError(
            "ATOPEN_SEGMENTS_HISTORY_DAYS: must be at least ATOPEN_SEGMENTS_WINDOW_DAYS"
        )
    return settings


def require_secret(settings: Settings) -> None:
    """`serve` refuses to start without a signing key (contract 1)."""
    if not settings.secrets:
        raise SettingsError(
            "ATOPEN_SECRET: not set; give one or more URL-signing keys, comma-separated "
            "(the first signs, all verify)"
        )
