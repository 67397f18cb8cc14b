"""The settings page lists exactly the variables atopen reads, so neither can drift."""

from __future__ import annotations

import re
from pathlib import Path

from server import settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# A row of the page's table: `| `ATOPEN_NAME` | default | meaning |`.
ROW = re.compile(r"^\| `(ATOPEN_[A-Z0-9_<>]+)` \|", re.MULTILINE)


def test_every_setting_is_documented_and_every_documented_one_is_read() -> None:
    documented = set(ROW.findall(PAGE.read_text(encoding="utf-8")))
    # The secrets of live data sources are a family, documented as one row.
    documented.discard("ATOPEN_SECRET_<NAME>")
    assert documented == set(settings.VARIABLE_NAMES)
