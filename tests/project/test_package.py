"""The package as a user gets it: built, installed into a fresh virtualenv, and run.

The wheel is built from the sdist (so the sdist is checked too), installed with the
`embedded` extra into a new virtualenv at the versions and hashes of requirements.lock,
and started from that virtualenv's `atopen`, in a directory outside the repository:
`atopen serve` on the embedded store, and `atopen demo`, whose banner's commands are run
as printed. The images are decoded with Pillow. The font files it ships are the ones
renderers/fontfiles/SHA256SUMS names, byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from PIL import Image
from support import free_port, run_ok

# Slow, left out of `make test-fast`: they build the package and install it into a fresh virtualenv.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FONT_FILES = ROOT / "renderers" / "fontfiles"
UV = Path(sys.executable).parent / "uv"
SECRET = "package-test-signing-key"
TOKEN = "package-test-api-token"
HTTP = urllib3.PoolManager(retries=False, timeout=10.0)


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run_ok(command, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built as `uv build` builds a release: the sdist first, the wheel from it, with the
    build dependencies the lock pins (hash-checked)."""
    dist = tmp_path_factory.mktemp("dist")
    run(
        UV,
        "build",
        "--build-constraints",
        ROOT / "requirements.lock",
        "--require-hashes",
        "--out-dir",
        dist,
        ROOT,
        cwd=dist,
    )
    (built,) = dist.glob("atopen-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel and the `embedded` extra, constrained to the lock."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", where, cwd=where.parent)
    run(
        UV,
        "pip",
        "install",
        "--python",
        where / "bin" / "python",
        "--constraints",
        ROOT / "requirements.lock",
        f"{wheel}[embedded]",
        cwd=where.parent,
    )
    return where


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the repository."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    return directory


def environment(venv: Path, data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without Python's or atopen's settings, with the
    virtualenv's bin first on PATH and the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ATOPEN_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["ATOPEN_DATA_DIR"] = str(data_dir)
    env.update(settings)
    return env


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is stopped with SIGTERM (as a supervisor would)."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def start_installed(
    venv: Path,
    subcommand: str,
    env: dict[str, str],
    elsewhere: Path,
    started: list[subprocess.Popen[str]],
    *,
    read_stdout: bool = False,
) -> tuple[subprocess.Popen[str], Path]:
    """`atopen SUBCOMMAND` of the virtualenv, run in `elsewhere` until the test ends, and
    the log its output goes to (all of it but the stdout a test reads)."""
    log = elsewhere / "atopen.log"
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603 - the installed command
            [str(venv / "bin" / "atopen"), subcommand],
            cwd=elsewhere,
            env=env,
            stdout=subprocess.PIPE if read_stdout else output,
            stderr=output,
            text=True,
        )
    started.append(process)
    return process, log


def wait_until_ready(base_url: str, process: subprocess.Popen[str], log: Path) -> None:
    for _ in range(600):
        assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")[-3000:]
        try:
            if HTTP.request("GET", f"{base_url}/readyz").status == 200:
                return
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base_url} was not ready within a minute")


def fetch_image(url: str) -> tuple[Image.Image, str]:
    response = HTTP.request("GET", url)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("image/")
    image = Image.open(io.BytesIO(response.data))
    image.load()
    return image, response.headers["X-Atopen-Variant"]


def installed_templates(venv: Path) -> Path:
    found = run(
        venv / "bin" / "python",
        "-c",
        "import server.web.app; print(server.web.app.TEMPLATES_DIR)",
        cwd=venv.parent,
        # Nothing of this process's Python path: the installed package alone.
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    templates = Path(found.strip())
    assert templates.is_relative_to(venv), templates
    return templates


def test_serve_from_the_installed_wheel_answers_a_signed_image(
    venv: Path, elsewhere: Path, started: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(
        venv,
        elsewhere / "data",
        ATOPEN_PORT=str(port),
        ATOPEN_WORKERS="1",
        ATOPEN_SECRET=SECRET,
        ATOPEN_API_TOKEN=TOKEN,
        ATOPEN_PUBLIC_URL=base,
    )
    process, log = start_installed(venv, "serve", env, elsewhere, started)
    wait_until_ready(base, process, log)
    # A starter block, read from the installed package, registered through the API.
    block = json.loads((installed_templates(venv) / "blocks" / "greeting.json").read_text())
    stored = HTTP.request(
        "PUT",
        f"{base}/api/v1/blocks/greeting",
        body=json.dumps(block).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert stored.status == 201, stored.data
    signed = run(venv / "bin" / "atopen", "sign", "/i/greeting.png?r=u1", cwd=elsewhere, env=env)
    url = signed.strip()
    assert url.startswith(f"{base}/i/greeting.png?r=u1&sig=")
    image, variant = fetch_image(url)
    assert image.format == "PNG"
    assert image.size == (block["width"], block["height"])
    # u1 has no profile: the default, drawn with the bundled fonts (text: many colours).
    assert variant == "default"
    assert len(image.convert("RGB").getcolors(1 << 16) or []) > 8


def test_demo_from_the_installed_wheel_and_its_banner_commands_run_as_printed(
    venv: Path, elsewhere: Path, started: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    env = environment(venv, elsewhere / "data", ATOPEN_PORT=str(port))
    # As a newcomer runs it: the virtualenv's atopen by its path, PATH left as it was.
    env["PATH"] = os.environ.get("PATH", "")
    process, log = start_installed(venv, "demo", env, elsewhere, started, read_stdout=True)
    assert process.stdout is not None
    banner: list[str] = []
    for line in process.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("    ATOPEN_SECRET="):
            break
    text = "\n".join(banner)
    assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")[-3000:]
    assert f"atopen demo is serving on http://127.0.0.1:{port}" in text, text
    page = re.search(r"demo email page: file://(\S+)", text)
    assert page is not None
    assert Path(page.group(1)).is_file()
    # The banner's two commands, run by a shell exactly as printed, from another directory.
    curl_line, sign_line = banner[-2].strip(), banner[-1].strip()
    assert curl_line.startswith("curl ")
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("ATOPEN_")}
    blocks = json.loads(run("bash", "-c", f"{curl_line} --silent", cwd=elsewhere, env=plain_env))
    assert {b["id"] for b in blocks["blocks"]} >= {"cart-reminder", "greeting"}
    url = run("bash", "-c", sign_line, cwd=elsewhere, env=plain_env).strip()
    assert url.startswith(f"http://127.0.0.1:{port}/i/cart-reminder.png?r=ann&sig=")
    image, variant = fetch_image(url)
    assert image.format == "PNG"
    assert variant == "cart"  # ann's abandoned cart, from the demo data


def test_the_font_files_are_the_pinned_ones(wheel: Path) -> None:
    """Every font file, in the repository and in the wheel, has the hash SHA256SUMS gives,
    every one is listed, and each family's directory carries its licence."""
    listed: dict[str, str] = {}
    for line in (FONT_FILES / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = {
        path.relative_to(FONT_FILES).as_posix()
        for path in FONT_FILES.rglob("*")
        if path.suffix.lower() in (".ttf", ".otf")
    }
    assert set(listed) == on_disk
    with zipfile.ZipFile(wheel) as archive:
        for name, digest in listed.items():
            assert hashlib.sha256((FONT_FILES / name).read_bytes()).hexdigest() == digest, name
            shipped = archive.read(f"renderers/fontfiles/{name}")
            assert hashlib.sha256(shipped).hexdigest() == digest, name
        names = set(archive.namelist())
    for family in {name.split("/")[0] for name in listed}:
        licences = {"OFL.txt", "LICENSE.txt"} & {p.name for p in (FONT_FILES / family).iterdir()}
        assert licences, f"no licence beside the {family} fonts"
        assert all(f"renderers/fontfiles/{family}/{lic}" in names for lic in licences)
