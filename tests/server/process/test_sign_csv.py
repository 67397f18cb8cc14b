"""`atopen sign --csv IN --out OUT`: every row gets its token (and signed URLs), streamed."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from support import contract_token, run_command

from server.process.sign_csv import RowSigner, SignCsvError, UrlColumn, sign_csv
from server.signing import Signer

ROOT = Path(__file__).resolve().parents[3]
KEY = "csv-key"
ROWS = [
    {"recipient": "u1", "first_name": "Ann", "coupon": "SPRING 10%"},
    {"recipient": "Zoë-2", "first_name": 'Bo "the, best"', "coupon": "A&B"},
]


def atopen(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOPEN_")}
    env.update(ATOPEN_SECRET=KEY, ATOPEN_PUBLIC_URL="https://img.example.com")
    env["ATOPEN_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(ROOT)  # this checkout's `server`, whatever is installed
    return run_command(
        [sys.executable, "-m", "server", "sign", *args], env=env, cwd=tmp_path, timeout=60
    )


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_every_row_gets_its_token_and_keeps_its_columns(tmp_path: Path) -> None:
    source = write(tmp_path / "list.csv", ROWS)
    result = atopen(tmp_path, "--csv", str(source), "--out", "signed.csv")
    assert result.returncode == 0, result.stderr
    assert "2 rows written to signed.csv" in result.stderr
    rows = read(tmp_path / "signed.csv")
    assert rows == [{**row, "atopen_token": contract_token(KEY, row["recipient"])} for row in ROWS]


@pytest.mark.slow
def test_url_columns_are_signed_with_each_rows_values(tmp_path: Path) -> None:
    source = write(tmp_path / "list.csv", ROWS)
    result = atopen(
        tmp_path,
        "--csv",
        str(source),
        "--out",
        "signed.csv",
        "--url",
        "hero=/i/hero.png?r={recipient}&m.coupon={coupon}",
        "--url",
        "hero_click=/c/hero?r={recipient}",
        "--tokens",
    )
    assert result.returncode == 0, result.stderr
    for given, row in zip(ROWS, read(tmp_path / "signed.csv"), strict=True):
        assert row["atopen_token"] == contract_token(KEY, given["recipient"])
        for column, path in (("hero", "/i/hero.png"), ("hero_click", "/c/hero")):
            url = urlsplit(row[column])
            assert (url.scheme, url.netloc, url.path) == ("https", "img.example.com", path)
            pairs = parse_qsl(url.query, keep_blank_values=True)
            assert Signer([KEY]).verify(url.path, pairs)
            assert dict(pairs)["r"] == given["recipient"]
        assert dict(parse_qsl(urlsplit(row["hero"]).query))["m.coupon"] == given["coupon"]


@pytest.mark.slow
def test_a_bad_list_is_named_and_leaves_no_file_behind(tmp_path: Path) -> None:
    source = write(tmp_path / "list.csv", ROWS)
    signer = Signer([KEY])
    for rows_signer, said in (
        (RowSigner(signer, "", recipient_column="id"), "no column named id"),
        (
            RowSigner(
                signer, "", recipient_column="recipient", urls=[UrlColumn("h", "/i/h.png?r={x}")]
            ),
            "no column named x",
        ),
        (
            RowSigner(signer, "", recipient_column="recipient", urls=[UrlColumn("coupon", "/c/h")]),
            "column coupon would be there twice",
        ),
    ):
        with pytest.raises(SignCsvError, match=said):
            sign_csv(source, tmp_path / "signed.csv", rows_signer, progress=False)
    with pytest.raises(SignCsvError, match="COLUMN=/PATH"):
        UrlColumn.parse("hero")
    # As the command says it: the third row is an email address, not an opaque id, found
    # after two rows were written.
    bad = write(tmp_path / "bad.csv", [*ROWS, {**ROWS[0], "recipient": "ann@example.com"}])
    result = atopen(tmp_path, "--csv", str(bad), "--out", "signed.csv")
    assert result.returncode == 2
    assert "line 4: recipient: must be an opaque id" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "list.csv"]
    result = atopen(tmp_path, "--csv", "missing.csv", "--out", "signed.csv")
    assert (result.returncode, "missing.csv: No such file" in result.stderr) == (2, True)


def peak_bytes(tmp_path: Path, rows: int) -> int:
    """The most memory that signing a list of `rows` rows held at once."""
    source = tmp_path / f"{rows}.csv"
    with source.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["recipient", "first_name"])
        writer.writerows([f"recipient-{i}", "Ann"] for i in range(rows))
    rows_signer = RowSigner(Signer([KEY]), "https://img.example.com", recipient_column="recipient")
    tracemalloc.start()
    try:
        assert sign_csv(source, tmp_path / f"{rows}-out.csv", rows_signer, progress=False) == rows
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_list(tmp_path: Path) -> None:
    small, large = peak_bytes(tmp_path, 1_000), peak_bytes(tmp_path, 20_000)
    # Twenty times the rows, the same memory (give or take buffers).
    assert large < small + 64 * 1024, (small, large)
