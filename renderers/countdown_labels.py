"""The words under a countdown's numbers, in the block's language, with correct plurals.

Long labels follow each language's plural rules (CLDR: English "1 day", "2 days";
French "0 jour"; Polish "1 dzień", "2 dni", "5 dni", "2 godziny", "5 godzin"). Short
labels are abbreviations that need no plural.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Unit = Literal["days", "hours", "minutes", "seconds"]
UNITS: tuple[Unit, ...] = ("days", "hours", "minutes", "seconds")
SECONDS: dict[Unit, int] = {"days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1}
Plural = Literal["one", "few", "many", "other"]


def _one_other(value: int) -> Plural:
    return "one" if value == 1 else "other"


def _french(value: int) -> Plural:
    return "one" if value in (0, 1) else "other"


def _polish(value: int) -> Plural:
    if value == 1:
        return "one"
    if value % 10 in (2, 3, 4) and value % 100 not in (12, 13, 14):
        return "few"
    return "many"


# language -> (plural rule, long forms by unit and plural category, short forms by unit)
_LANGUAGES: dict[
    str, tuple[Callable[[int], Plural], dict[Unit, dict[Plural, str]], dict[Unit, str]]
] = {
    "en": (
        _one_other,
        {
            "days": {"one": "day", "other": "days"},
            "hours": {"one": "hour", "other": "hours"},
            "minutes": {"one": "minute", "other": "minutes"},
            "seconds": {"one": "second", "other": "seconds"},
        },
        {"days": "days", "hours": "hrs", "minutes": "min", "seconds": "sec"},
    ),
    "de": (
        _one_other,
        {
            "days": {"one": "Tag", "other": "Tage"},
            "hours": {"one": "Stunde", "other": "Stunden"},
            "minutes": {"one": "Minute", "other": "Minuten"},
            "seconds": {"one": "Sekunde", "other": "Sekunden"},
        },
        {"days": "Tg.", "hours": "Std.", "minutes": "Min.", "seconds": "Sek."},
    ),
    "fr": (
        _french,
        {
            "days": {"one": "jour", "other": "jours"},
            "hours": {"one": "heure", "other": "heures"},
            "minutes": {"one": "minute", "other": "minutes"},
            "seconds": {"one": "seconde", "other": "secondes"},
        },
        {"days": "j", "hours": "h", "minutes": "min", "seconds": "s"},
    ),
    "es": (
        _one_other,
        {
            "days": {"one": "día", "other": "días"},
            "hours": {"one": "hora", "other": "horas"},
            "minutes": {"one": "minuto", "other": "minutos"},
            "seconds": {"one": "segundo", "other": "segundos"},
        },
        {"days": "d", "hours": "h", "minutes": "min", "seconds": "s"},
    ),
    "it": (
        _one_other,
        {
            "days": {"one": "giorno", "other": "giorni"},
            "hours": {"one": "ora", "other": "ore"},
            "minutes": {"one": "minuto", "other": "minuti"},
            "seconds": {"one": "secondo", "other": "secondi"},
        },
        {"days": "gg", "hours": "ore", "minutes": "min", "seconds": "sec"},
    ),
    "pl": (
        _polish,
        {
            "days": {"one": "dzień", "few": "dni", "many": "dni"},
            "hours": {"one": "godzina", "few": "godziny", "many": "godzin"},
            "minutes": {"one": "minuta", "few": "minuty", "many": "minut"},
            "seconds": {"one": "sekunda", "few": "sekundy", "many": "sekund"},
        },
        {"days": "dni", "hours": "godz.", "minutes": "min", "seconds": "sek."},
    ),
    "nl": (
        _one_other,
        {
            "days": {"one": "dag", "other": "dagen"},
            "hours": {"one": "uur", "other": "uur"},
            "minutes": {"one": "minuut", "other": "minuten"},
            "seconds": {"one": "seconde", "other": "seconden"},
        },
        {"days": "d", "hours": "u", "minutes": "min", "seconds": "s"},
    ),
    "pt": (
        _one_other,
        {
            "days": {"one": "dia", "other": "dias"},
            "hours": {"one": "hora", "other": "horas"},
            "minutes": {"one": "minuto", "other": "minutos"},
            "seconds": {"one": "segundo", "other": "segundos"},
        },
        {"days": "d", "hours": "h", "minutes": "min", "seconds": "s"},
    ),
}
LANGUAGES: tuple[str, ...] = tuple(_LANGUAGES)


def label(lang: str, unit: Unit, value: int, *, short: bool) -> str:
    """The word under `value` of `unit` in `lang` (one of LANGUAGES)."""
    rule, long_forms, short_forms = _LANGUAGES[lang]
    if short:
        return short_forms[unit]
    return long_forms[unit][rule(value)]


def all_labels(lang: str, unit: Unit, *, short: bool) -> tuple[str, ...]:
    """Every form `label` can give for `unit`: the widest one sizes the countdown."""
    _, long_forms, short_forms = _LANGUAGES[lang]
    return (short_forms[unit],) if short else tuple(long_forms[unit].values())
