"""`broadcaster import-subscribers`: CSV into subscribers and locations, all or nothing."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from broadcaster.citizens.privacy import erase
from broadcaster.database import connect
from broadcaster.importer import ImportFailed, import_file
from broadcaster.phone import PhoneError, normalise, normalise_phone

HEADER = "phone,lat,lon,label,language,status\n"
VALID = (
    HEADER + "20123456,55.9267,12.3111,home,da,\n"
    "+45 20 12 34 56,55.676098,12.568337,work,,\n"  # the same number: a second location
    "+4540123456,56.0,12.5,,en,pending\n"
    "+46 70 123 45 67,55.6,13.0,sommerhus,sv,active\n"
    "\n"  # blank lines are ignored
    "26000001,-33.856784,151.215297,,,opted_out\n"
)


def run_cli(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": db_url, "BROADCASTER_LOG_LEVEL": "warning"},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def write(tmp_path: Path, text: str, name: str = "subscribers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _by_place(location: tuple[str, str | None, float, float]) -> tuple[str, float, float]:
    return (location[0], location[2], location[3])


async def contents(
    url: str,
) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str | None, float, float]]]:
    """Subscribers as {phone: (language, status)} and locations as sorted (phone, label, x, y)."""
    conn = await connect(url)
    try:
        subs = await conn.fetch("SELECT phone, language, status FROM subscribers")
        locs = await conn.fetch(
            "SELECT s.phone, l.label, l.position[0] AS x, l.position[1] AS y "
            "FROM subscriber_locations l JOIN subscribers s ON s.id = l.subscriber_id"
        )
    finally:
        await conn.close()
    return (
        {r["phone"]: (r["language"], r["status"]) for r in subs},
        sorted(((r["phone"], r["label"], r["x"], r["y"]) for r in locs), key=_by_place),
    )


async def test_valid_file_through_the_command(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    done = run_cli("import-subscribers", str(path), db_url=db_url)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("imported subscribers.csv: 5 rows read (0 skipped)")
    assert "4 created, 0 updated, 0 unchanged; 5 locations added (0 already known)" in summary
    assert summary.endswith(" s")

    subscribers, locations = await contents(db_url)
    assert subscribers == {
        "+4520123456": ("da", "active"),
        "+4540123456": ("en", "pending"),
        "+46701234567": ("sv", "active"),
        "+4526000001": ("da", "opted_out"),
    }
    # Positions are (lon, lat) in micro-degrees, exactly as the API stores them.
    assert locations == sorted(
        [
            ("+4520123456", "home", 12.3111 * 1e6, 55.9267 * 1e6),
            ("+4520123456", "work", 12.568337 * 1e6, 55.676098 * 1e6),
            ("+4540123456", None, 12.5 * 1e6, 56.0 * 1e6),
            ("+46701234567", "sommerhus", 13.0 * 1e6, 55.6 * 1e6),
            ("+4526000001", None, 151.215297 * 1e6, -33.856784 * 1e6),
        ],
        key=_by_place,
    )


async def test_reimport_changes_nothing_and_repeats_are_skipped(
    db_url: str, tmp_path: Path
) -> None:
    path = write(tmp_path, VALID + "20123456,55.9267,12.3111,again,,\n")
    conn = await connect(db_url)
    try:
        first = await import_file(conn, path)
        assert (first.subscribers_created, first.locations_added, first.locations_known) == (
            4,
            5,
            1,  # the last row repeats the first location of the same number
        )
        before = await contents(db_url)
        again = await import_file(conn, path)
        assert (again.rows_read, again.subscribers_created, again.subscribers_updated) == (6, 0, 0)
        assert (again.subscribers_unchanged, again.locations_added, again.locations_known) == (
            4,
            0,
            6,
        )
        assert await contents(db_url) == before
        assert ("+4520123456", "home", 12.3111 * 1e6, 55.9267 * 1e6) in before[1]
        # A new location for a known number is added; nothing else moves.
        more = write(tmp_path, "phone,lon,lat\n20 12 34 56,12.0,55.0\n", "more.csv")
        third = await import_file(conn, more)
        assert (third.subscribers_updated, third.subscribers_unchanged) == (0, 1)
        assert third.locations_added == 1
    finally:
        await conn.close()
    assert len((await contents(db_url))[1]) == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + "20123456,55.9,12.3,,,\n12345,55.9,12.3,,,\n", "line 3: phone: not a valid"),
        (
            HEADER + "20123456,55.9,12.3,,,\n20123457,91,12.3,,,\n",
            "line 3: lat: 91 is not in [-90, 90]",
        ),
        (HEADER + "20123456,abc,12.3,,,\n", "line 2: lat: 'abc' is not a number"),
        (HEADER + "20123456,55.9,,,,\n", "line 2: lon is empty"),
        (HEADER + "20123456,55.9,12.3,,da,gone\n", "line 2: status: 'gone' is not one of"),
        (HEADER + "20123456,55.9,12.3,,dansk,\n", "line 2: language: 'dansk' is not a two"),
        (HEADER + "20123456,55.9\n", "line 2: expected 6 fields, found 2"),
        ("phone,lat\n20123456,55.9\n", "line 1: missing column(s) lon"),
        ("phone,postal_code,lat\n20123456,3400,\n", "line 1: missing column(s) lon"),
        ("phone,label\n20123456,x\n", "line 1: missing column(s) lat, lon"),
        ("phone,postal_code\n20123456,9999\n", "line 2: postal_code: '9999' is not a known"),
        ("phone,postal_code\n20123456,\n", "line 2: postal_code is empty"),
        (
            "phone,lat,lon,postal_code\n20123456,55.9,12.3,3400\n",
            "line 2: give lat and lon or postal_code, not both",
        ),
        ("phone;lat;lon\n20123456;55.9;12.3\n", "line 1: unknown column 'phone;lat;lon'"),
        ("phone,lat,lon,lat\n", "line 1: column 'lat' appears twice"),
        ("", "subscribers.csv is empty"),
    ],
)
async def test_a_bad_row_stops_the_import_and_nothing_is_imported(
    db_url: str, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    conn = await connect(db_url)
    try:
        with pytest.raises(ImportFailed) as failed:
            await import_file(conn, path, chunk_rows=1)  # the good row was already copied
        assert await conn.fetchval("SELECT count(*) FROM subscribers") == 0
        assert await conn.fetchval("SELECT count(*) FROM subscriber_locations") == 0
    finally:
        await conn.close()
    message = str(failed.value)
    assert expected in message and "\n" not in message
    assert "12345" not in message  # numbers are not echoed


async def test_postal_codes_as_locations(db_url: str, tmp_path: Path) -> None:
    """A postal_code column next to lat and lon: each row gives one or the other; repeats and
    postal codes a subscriber already has are skipped, so a second import changes nothing."""
    text = (
        "phone,lat,lon,postal_code,label\n"
        "20123456,55.9267,12.3111,,home\n"
        "20123456,,, 3480 ,parents\n"
        "20123457,,,3400,\n"
        "20123457,,,3400,again\n"
        "20123458,,,3000,\n"
    )
    path = write(tmp_path, text)
    conn = await connect(db_url)
    try:
        first = await import_file(conn, path)
        assert (first.subscribers_created, first.locations_added, first.locations_known) == (
            3,
            4,
            1,
        )
        rows = await conn.fetch(
            "SELECT s.phone, z.code, r.label FROM subscriber_zones r "
            "JOIN subscribers s ON s.id = r.subscriber_id JOIN zones z ON z.id = r.zone_id "
            "ORDER BY s.phone"
        )
        assert [tuple(r) for r in rows] == [
            ("+4520123456", "3480", "parents"),
            ("+4520123457", "3400", None),
            ("+4520123458", "3000", None),
        ]
        assert await conn.fetchval("SELECT count(*) FROM subscriber_locations") == 1
        again = await import_file(conn, path)
        assert (again.locations_added, again.locations_known) == (0, 5)
        only_codes = write(tmp_path, "phone,postal_code\n20123459,3400\n", "codes.csv")
        assert (await import_file(conn, only_codes)).locations_added == 1
    finally:
        await conn.close()


async def test_header_variants_and_encoding(db_url: str, tmp_path: Path) -> None:
    text = "\ufeffLon, PHONE ,Lat\r\n12.3,20123456,55.9\r\n\r\n12.4,20123457,55.8\r\n"
    conn = await connect(db_url)
    try:
        result = await import_file(conn, write(tmp_path, text))
        assert (result.rows_read, result.subscribers_created, result.locations_added) == (2, 2, 2)
        latin1 = tmp_path / "latin1.csv"
        rows = ["phone,lat,lon,label"] + [f"2013{i:04d},55.9,12.3,hjem" for i in range(2000)]
        rows.append("20140000,55.9,12.3,for\xe6ldre")
        latin1.write_bytes("\n".join(rows).encode("latin-1"))
        with pytest.raises(ImportFailed, match=r"^latin1.csv line 2002: not UTF-8 text;"):
            await import_file(conn, latin1, skip_invalid=True)
        assert await conn.fetchval("SELECT count(*) FROM subscribers") == 2
    finally:
        await conn.close()


async def test_the_command_fails_with_one_line(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "20123456,55.9,12.3,,,\n20123457,55.9,200,,,\n")
    done = run_cli("import-subscribers", str(path), db_url=db_url)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("broadcaster: subscribers.csv line 3: lon: 200 is not in")
    assert "nothing was imported" in done.stderr
    missing = run_cli("import-subscribers", str(tmp_path / "nope.csv"), db_url=db_url)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "cannot read" in missing.stderr
    assert (await contents(db_url)) == ({}, [])


async def test_skip_invalid_imports_the_rest_and_reports(db_url: str, tmp_path: Path) -> None:
    rows = [HEADER.strip()]
    for i in range(30):
        if i % 4 == 1:
            rows.append(f"1{i:07d},55.9,12.3,,,")  # not a valid Danish number
        elif i % 4 == 3:
            rows.append(f"2012{i:04d},95,12.3,,,")
        else:
            rows.append(f"2012{i:04d},55.9,12.3,,,")
    path = write(tmp_path, "\n".join(rows) + "\n")
    conn = await connect(db_url)
    try:
        result = await import_file(conn, path, skip_invalid=True, chunk_rows=4)
        assert (result.rows_read, result.skipped, result.subscribers_created) == (30, 15, 15)
        assert result.problems[:2] == [
            (3, "phone: not a valid phone number"),
            (5, "lat: 95 is not in [-90, 90]"),
        ]
        assert len(result.problems) == 5
        assert await conn.fetchval("SELECT count(*) FROM subscriber_locations") == 15
    finally:
        await conn.close()
    again = run_cli("import-subscribers", "--skip-invalid", str(path), db_url=db_url)
    assert again.returncode == 0, again.stderr
    first, report, summary = again.stdout.strip().splitlines()
    assert first.startswith("skipped 15 invalid row(s): line 3: phone: not a valid phone number;")
    assert first.endswith(", ...")
    assert report == f"rows not imported as written: {path}.errors.csv"
    assert "30 rows read (15 skipped)" in summary and "0 created" in summary
    # The report names every bad line, the column, the value as written and why.
    listed = list(csv.reader(Path(f"{path}.errors.csv").read_text().splitlines()))
    assert listed[0] == ["line", "column", "value", "reason"]
    assert [int(r[0]) for r in listed[1:]] == [i + 2 for i in range(30) if i % 4 in (1, 3)]
    assert listed[1] == ["3", "phone", "10000001", "phone: not a valid phone number"]
    assert listed[2] == ["5", "lat", "95", "lat: 95 is not in [-90, 90]"]


async def opt_out(url: str, phone: str) -> None:
    conn = await connect(url)
    try:
        await conn.execute(
            "UPDATE subscribers SET status = 'opted_out', language = 'en' WHERE phone = $1", phone
        )
    finally:
        await conn.close()


async def test_an_erased_number_is_never_imported_again(db_url: str, tmp_path: Path) -> None:
    conn = await connect(db_url)
    try:
        await import_file(conn, write(tmp_path, "phone,lat,lon\n20123456,55.9,12.3\n"))
        assert await erase(conn, "+4520123456") is not None
        report = tmp_path / "again.report.csv"
        text = "phone,lat,lon\n20123456,55.9,12.3\n20123457,55.9,12.3\n"
        result = await import_file(conn, write(tmp_path, text, "again.csv"), report=report)
        assert (result.erased, result.subscribers_created) == (1, 1)
        assert (
            await conn.fetchval("SELECT count(*) FROM subscribers WHERE phone = $1", "+4520123456")
            == 0
        )
        assert report.read_text().splitlines()[1:] == [
            "2,phone,,erased at the subscriber's request; not imported"
        ]
    finally:
        await conn.close()


async def test_opted_out_stays_opted_out_unless_the_file_says_otherwise(
    db_url: str, tmp_path: Path
) -> None:
    conn = await connect(db_url)
    try:
        await import_file(conn, write(tmp_path, "phone,lat,lon\n20123456,55.9,12.3\n"))
        await opt_out(db_url, "+4520123456")
        # No status column, or an empty status: the opt-out (and the language) stay.
        for i, text in enumerate(
            ["phone,lat,lon\n20123456,55.8,12.3\n", HEADER + "20123456,55.7,12.3,,,\n"]
        ):
            result = await import_file(conn, write(tmp_path, text, f"f{i}.csv"))
            assert result.subscribers_unchanged == 1 and result.locations_added == 1
            assert await status(conn, "+4520123456") == ("en", "opted_out")
        # A language alone changes the language only.
        await import_file(conn, write(tmp_path, HEADER + "20123456,55.7,12.3,,da,\n", "l.csv"))
        assert await status(conn, "+4520123456") == ("da", "opted_out")
        # Not even an explicit status re-subscribes an opted-out number: only its owner can
        # (START, a confirmed sign-up). The rows are reported; their places are still added.
        text = HEADER + "20123456,55.7,12.3,,,pending\n20123456,55.6,12.3,,,active\n"
        text += "20123456,55.5,12.3,,,\n"
        report = tmp_path / "yes.report.csv"
        result = await import_file(conn, write(tmp_path, text, "yes.csv"), report=report)
        assert result.opt_outs_kept == 2 and result.subscribers_updated == 0
        assert await status(conn, "+4520123456") == ("da", "opted_out")
        assert report.read_text().splitlines()[1:] == [
            "2,status,pending,opted out by the subscriber; stays so",
            "3,status,active,opted out by the subscriber; stays so",
        ]
        # A row saying opted_out opts an existing, active subscriber out.
        await import_file(conn, write(tmp_path, HEADER + "20123457,1,1,,,\n", "new.csv"))
        await import_file(conn, write(tmp_path, HEADER + "20123457,1,1,,,opted_out\n", "no.csv"))
        assert await status(conn, "+4520123457") == ("da", "opted_out")
    finally:
        await conn.close()


async def status(conn: asyncpg.Connection, phone: str) -> tuple[str, str]:
    row = await conn.fetchrow("SELECT language, status FROM subscribers WHERE phone = $1", phone)
    assert row is not None
    return (row["language"], row["status"])


def _reference(raw: str) -> str:
    try:
        return normalise(raw)
    except PhoneError as exc:
        return f"error: {exc}"


def _fast(raw: str) -> str:
    try:
        return normalise_phone(raw)
    except PhoneError as exc:
        return f"error: {exc}"


def test_fast_phone_path_gives_the_same_result_as_phonenumbers() -> None:
    rng = random.Random(4711)
    samples = []
    for prefix in range(1000):  # every three-digit start, valid and invalid alike
        for _ in range(3):
            digits = f"{prefix:03d}{rng.randrange(100_000):05d}"
            samples += [digits, "+45" + digits, f" {digits} ", "+45 " + digits, "0045" + digits]
    samples += ["2012345", "201234567", "+452012345", "+4520123456 ", "+46701234567", "", "abc"]
    samples += ["45123456", "4520123456", "+45 20 12 34 56", "+45-2012-3456", "tel:+4520123456"]
    mismatches = [(s, _reference(s), _fast(s)) for s in samples if _reference(s) != _fast(s)]
    assert mismatches == []
    assert sum(not r.startswith("error") for r in map(_reference, samples)) > 5_000
