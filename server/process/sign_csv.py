"""`atopen sign --csv IN --out OUT`: a recipient list with each row's token or signed URLs.

The list is read and written one row at a time, so a list of millions of rows takes the
memory of one row. The result is written beside `OUT` and renamed onto it at the end:
a run that fails on row 900,000 leaves no half-written file behind.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from tqdm import tqdm

from server.api.errors import ApiError
from server.api.ids import recipient_id
from server.signing import Signer

TOKEN_COLUMN = "atopen_token"  # noqa: S105 - a column's name
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class SignCsvError(ValueError):
    """The list cannot be signed as asked; the message names the column or line."""


@dataclass(frozen=True, slots=True)
class UrlColumn:
    """A column of signed URLs: `name=/i/hero.png?r={recipient}&m.coupon={coupon}`, each
    `{column}` replaced by that row's value, URL-encoded."""

    name: str
    template: str

    @classmethod
    def parse(cls, text: str) -> UrlColumn:
        name, found, template = text.partition("=")
        if not found or not name or not template.startswith("/"):
            raise SignCsvError(
                f"--url {text!r}: write it as COLUMN=/PATH?QUERY, e.g. "
                "hero_image=/i/hero.png?r={recipient}"
            )
        return cls(name, template)

    def placeholders(self) -> list[str]:
        return _PLACEHOLDER.findall(self.template)

    def fill(self, row: dict[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda match: quote(row[match[1]], safe=""), self.template)


@dataclass(frozen=True, slots=True)
class RowSigner:
    """What `sign_csv` adds to each row."""

    signer: Signer
    base_url: str
    recipient_column: str
    urls: Sequence[UrlColumn] = ()
    tokens: bool = True

    def columns(self) -> list[str]:
        return [*([TOKEN_COLUMN] if self.tokens else []), *(url.name for url in self.urls)]

    def check(self, columns: list[str]) -> None:
        """A `SignCsvError` naming what the file's columns lack or would have twice."""
        if not self.tokens and not self.urls:
            raise SignCsvError("nothing to add: ask for tokens, --url columns, or both")
        if not columns:
            raise SignCsvError("the file is empty: its first line must name the columns")
        wanted = [self.recipient_column] if self.tokens else []
        wanted += [name for url in self.urls for name in url.placeholders()]
        missing = sorted({name for name in wanted if name not in columns})
        if missing:
            raise SignCsvError(
                f"no column named {', '.join(missing)} (the columns are: {', '.join(columns)})"
            )
        added = self.columns()
        clashes = sorted({name for name in added if name in columns or added.count(name) > 1})
        if clashes:
            raise SignCsvError(f"column {', '.join(clashes)} would be there twice: rename it")

    def values(self, row: dict[str, str], line: int) -> list[str]:
        if None in row or any(value is None for value in row.values()):
            raise SignCsvError(f"line {line}: not as many values as the first line has columns")
        values: list[str] = []
        if self.tokens:
            try:
                recipient = recipient_id(row[self.recipient_column], self.recipient_column)
            except ApiError as exc:
                raise SignCsvError(f"line {line}: {exc.message}") from None
            values.append(self.signer.recipient_token(recipient))
        values += [self.base_url + self.signer.sign_url(url.fill(row)) for url in self.urls]
        return values


def sign_csv(source: Path, target: Path, rows: RowSigner, *, progress: bool = True) -> int:
    """Write `source`'s rows to `target` with the columns `rows` adds; the number of rows."""
    with source.open(encoding="utf-8-sig", newline="") as infile:
        reader = csv.DictReader(_counted(infile, source.stat().st_size, progress))
        columns = list(reader.fieldnames or [])
        rows.check(columns)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
        try:
            count = 0
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as outfile:
                writer = csv.writer(outfile)
                writer.writerow([*columns, *rows.columns()])
                for row in reader:
                    writer.writerow([*row.values(), *rows.values(row, reader.line_num)])
                    count += 1
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return count


def _counted(lines: TextIO, size: int, shown: bool) -> Iterator[str]:
    """`lines`, advancing a progress bar by the bytes each line takes in the file."""
    # On a terminal only (disable=None): a log or a pipe gets no bar drawn into it.
    with tqdm(
        total=size, unit="B", unit_scale=True, disable=None if shown else True, desc="signing"
    ) as bar:
        for line in lines:
            bar.update(len(line.encode("utf-8")))
            yield line
