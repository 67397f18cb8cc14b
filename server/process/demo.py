"""`atopen demo`: the service on the embedded store, with demo blocks and data loaded.

The demo keeps a generated signing key and API token under the data dir (so the
printed URLs keep working across restarts), loads the starter blocks from
`templates/blocks/` and the sample recipients from `templates/demo/data.json`, and
writes an HTML page that embeds the signed URLs the way an email would.
"""

from __future__ import annotations

import html
import os
import secrets
import shlex
import shutil
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiohttp import web

from content_sources.shops import StoreDirectory
from server.api.app_state import BLOCKS, EVENTS, INVENTORY, PROFILES, REDIS, SETTINGS, SIGNER
from server.api.events_routes import parse_event
from server.settings import Settings
from server.web.app import TEMPLATES_DIR

DEMO_DATA = TEMPLATES_DIR / "demo" / "data.json"
STORES_DATA = TEMPLATES_DIR / "demo" / "stores.json"
BLOCKS_DIR = TEMPLATES_DIR / "blocks"


def demo_settings(settings: Settings) -> Settings:
    """Settings from the environment, with a signing key and API token made up if unset."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.secrets:
        settings = replace(settings, secrets=(_kept_secret(settings.data_dir / "demo-secret"),))
    if not settings.api_tokens:
        settings = replace(settings, api_tokens=(_kept_secret(settings.data_dir / "demo-token"),))
    return settings


def _kept_secret(path: Path) -> str:
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def install_demo(app: web.Application) -> None:
    app.on_startup.append(_load_demo)


async def _load_demo(app: web.Application) -> None:
    data = orjson.loads(DEMO_DATA.read_bytes())
    for path in sorted(BLOCKS_DIR.glob("*.json")):
        await app[BLOCKS].put(path.stem, orjson.loads(path.read_bytes()))
    for rid, profile in data["profiles"].items():
        await app[PROFILES].put(rid, profile)
    await app[INVENTORY].put_many({item.pop("sku"): item for item in data["inventory"]})
    stores = orjson.loads(STORES_DATA.read_bytes())
    await StoreDirectory(app[REDIS]).put_many({store.pop("id"): store for store in stores})
    now = datetime.now(UTC)
    events = []
    for raw in data["events"]:
        # Demo events are given relative to now, so the scenario is always fresh.
        event = dict(raw)
        ago = timedelta(minutes=float(event.pop("minutes_ago", 0)))
        event["ts"] = (now - ago).isoformat()
        events.append(parse_event(event, "", now))
    await app[EVENTS].store(events, now)


def announce_demo(app: web.Application) -> None:
    """Once the demo answers: its email page, and the banner that points at it."""
    data = orjson.loads(DEMO_DATA.read_bytes())
    page = write_demo_page(app, data["recipients_to_show"])
    examples = [signed_urls(app, block.id, "ann") for block in (p.block for p in app[BLOCKS].all())]
    print(_banner(app[SETTINGS], page, examples), flush=True)


def signed_urls(app: web.Application, block_id: str, recipient: str) -> tuple[str, str]:
    settings = app[SETTINGS]
    signer = app[SIGNER]
    prepared = app[BLOCKS].get(block_id)
    ext = prepared.block.format if prepared else "png"
    query = f"?r={recipient}"
    image = settings.base_url + signer.sign_url(f"/i/{block_id}.{ext}{query}")
    click = settings.base_url + signer.sign_url(f"/c/{block_id}{query}")
    return image, click


def write_demo_page(app: web.Application, recipients: list[str]) -> Path:
    """An HTML page that embeds every demo block for each recipient, as an email would."""
    rows: list[str] = []
    for prepared in app[BLOCKS].all():
        block = prepared.block
        for rid in recipients:
            image, click = signed_urls(app, block.id, rid)
            rows.append(
                f"<h3>{html.escape(block.id)} &middot; recipient {html.escape(rid)}</h3>\n"
                f'<a href="{html.escape(click)}"><img src="{html.escape(image)}" '
                f'width="{block.width}" height="{block.height}" alt="{html.escape(block.id)}" '
                f'style="display:block;border:0"></a>{_vote_links(app, block.id, rid)}'
            )
    page = app[SETTINGS].data_dir / "demo-email.html"
    page.write_text(
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>atopen demo email</title>"
        "</head><body style='font-family:sans-serif;max-width:640px;margin:auto'>\n"
        "<h1>atopen demo email</h1><p>Each image is rendered when this page loads; "
        "reload to open the email again.</p>\n" + "\n".join(rows) + "\n</body></html>\n"
    )
    return page.resolve()


def _vote_links(app: web.Application, block_id: str, recipient: str) -> str:
    """A poll's vote links as an email shows them beside its tally image: one signed
    click URL per option, each with `vote=OPTION`."""
    prepared = app[BLOCKS].get(block_id)
    poll = prepared.block.poll if prepared else None
    if poll is None:
        return ""
    signer = app[SIGNER]
    base = app[SETTINGS].base_url
    urls = {
        o: base + signer.sign_url(f"/c/{block_id}?r={recipient}&vote={o}") for o in poll.options
    }
    links = [f'<a href="{html.escape(url)}">{html.escape(o)}</a>' for o, url in urls.items()]
    return "\n<p>Vote: " + " &middot; ".join(links) + "</p>"


def _banner(settings: Settings, page: Path, examples: list[tuple[str, str]]) -> str:
    lines: list[str] = [
        "",
        f"atopen demo is serving on {settings.base_url}",
        f"  studio:          {settings.base_url}/studio (sign in with the API token below)",
        f"  demo email page: file://{page}",
        "  signed URLs for recipient ann (image, then click):",
        *(f"    {url}" for pair in examples for url in pair),
        f"  API token:       {settings.api_tokens[0]}",
        f"  signing key:     {settings.secrets[0]}",
        "  try:",
        f"    curl -H 'Authorization: Bearer {settings.api_tokens[0]}' "
        f"{settings.base_url}/api/v1/blocks",
        f"    ATOPEN_SECRET={settings.secrets[0]} ATOPEN_PUBLIC_URL={settings.base_url} "
        f"{_atopen_command()} sign "
        "'/i/cart-reminder.png?r=ann'",
        "",
    ]
    return "\n".join(lines)


def _atopen_command() -> str:
    """How to run `atopen` from a shell here: by name when it is on PATH, else by the path
    of the one installed beside this interpreter (`make demo` installs it in .venv/bin,
    which is not on PATH), else as a module."""
    if shutil.which("atopen"):
        return "atopen"
    beside = Path(sys.executable).parent / "atopen"
    if beside.exists():
        here = beside.is_relative_to(Path.cwd())
        return shlex.quote(os.path.relpath(beside) if here else str(beside))
    return f"{shlex.quote(sys.executable)} -m server"
