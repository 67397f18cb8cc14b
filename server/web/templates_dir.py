"""Where the data in `templates/` (starter blocks, bundled assets, demo data) is.

Run from a checkout, or from the container image (which copies the source tree as it
is), it is the `templates/` directory beside the `server` package. An installed wheel has
no such directory: it carries the same files as the `atopen_templates` package (see
`[tool.setuptools.package-dir]` in pyproject.toml), found through the import system.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "atopen_templates"

_BESIDE_THE_CODE = Path(__file__).resolve().parents[2] / "templates"


def templates_dir() -> Path:
    """The checkout's `templates/` if there is one, else the installed package's directory."""
    # The checkout first: an installed copy (of this or another version) must not stand
    # in for the files being edited next to the code that runs.
    if (_BESIDE_THE_CODE / "blocks").is_dir():
        return _BESIDE_THE_CODE
    # `templates/` has no `__init__.py`, so the installed package is a namespace package:
    # importlib.resources gives no filesystem path for one (a MultiplexedPath), its spec does.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"no templates: neither {_BESIDE_THE_CODE} nor an installed {PACKAGE} package"
        )
    return Path(next(iter(spec.submodule_search_locations)))


TEMPLATES_DIR = templates_dir()
