"""The rule context: what rules and templates read for one open."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from content_sources.inventory import InventoryView


class RuleContext(dict[str, object]):
    """Each built source's value under its name (`profile`, `now`, ...), a preview's
    replacements, and the block's live data under `data`.

    A dict, so the rule sandbox reads it as it is. The properties are for code that looks
    at one value itself, and say what type it has: None when it is absent, or when a
    preview replaced it with something else.
    """

    __slots__ = ()

    @property
    def now(self) -> datetime | None:
        now = self.get("now")
        return now if isinstance(now, datetime) else None

    @property
    def inventory(self) -> InventoryView | None:
        inventory = self.get("inventory")
        return inventory if isinstance(inventory, InventoryView) else None

    @property
    def geo(self) -> Mapping[str, object] | None:
        geo = self.get("geo")
        return geo if isinstance(geo, Mapping) else None

    @property
    def last_shown(self) -> Mapping[str, object] | None:
        shown = self.get("last_shown")
        return shown if isinstance(shown, Mapping) else None
