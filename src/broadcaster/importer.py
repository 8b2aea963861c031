"""Bulk import of subscribers from CSV: `broadcaster import-subscribers FILE [--skip-invalid]`.

The file is streamed and validated in Python in chunks; valid rows are COPYed into a temporary
table, and two set-based statements do the rest: one upsert of the subscribers and one insert of
their locations. Everything happens in one transaction: the whole file is imported or nothing is.

The file:

- UTF-8 (a byte-order mark is allowed), comma-separated, with a header line. Columns, in any
  order, names case-insensitive: `phone`, and `lat` and `lon` or `postal_code` or all three
  (required), `label`, `language`, `status` (optional). Unknown or repeated columns are refused,
  so a misspelt column is not silently lost.
- One row per location: a number on several rows gets several locations. A location is a point
  (`lat`, `lon`) or a postal code (`postal_code`, which must be a postal-code zone); a row gives
  one or the other, not both.
- `phone`: any format `broadcaster.phone.normalise` accepts (numbers without a country code are
  Danish), stored in E.164. `lat` in [-90, 90], `lon` in [-180, 180], in degrees.
- `label` at most 50 characters; `language` two letters (`da`, `en`, ...); `status` one of
  `active`, `pending`, `opted_out`. An empty cell means "not given".

The rules:

- A new subscriber gets the language and status of the file, `da` and `active` where not given.
- An existing subscriber keeps its language and status unless the file gives one; a value the
  file gives replaces it. Where one number's rows give different values, the last row giving one
  wins.
- Opt-out: **an existing subscriber's status only changes when the file states a status for that
  number, and an opted-out subscriber stays opted out whatever the file says**: only its owner
  opts back in (START, a confirmed sign-up). A row saying `opted_out` opts an existing subscriber
  out. Rows that asked to re-subscribe an opted-out number are reported (their places are added).
- Erasure: a number whose owner had it erased (privacy.py) is never imported again; its rows are
  reported and left out.
- Locations: a location equal to one the subscriber already has (same coordinates or postal
  code, whatever the label) is skipped, and so is a repeat within the file; the first label is
  kept. Re-importing a file therefore changes nothing.
- Bad rows: by default a bad row means nothing is imported; the whole file is still read, so
  that every bad row is reported, and the error names the first by line number and problem.
  With `--skip-invalid` the valid rows are imported, and the number of skipped rows is reported
  with the first few line numbers and reasons. Phone numbers are never echoed in messages.
- The report file (`report`, the CLI's `--report`, by default FILE.errors.csv) lists every row
  not imported as written, as CSV: line, column, value as written, reason; it is written only
  when there is such a row.

Phone numbers go through `phone.normalise_phone` (a fast path for plain Danish numbers).
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from broadcaster.ingest.geo import SCALE
from broadcaster.phone import PhoneError, normalise_phone

REQUIRED = ("phone",)
# A place: lat and lon, or postal_code (a column of either, or both, with one given per row).
PLACES = ("lat", "lon", "postal_code")
OPTIONAL = ("label", "language", "status")
STATUSES = frozenset({"active", "pending", "opted_out"})
DEFAULT_LANGUAGE = "da"
DEFAULT_STATUS = "active"
MAX_LABEL = 50
CHUNK_ROWS = 20_000
EXAMPLES = 5
# Serialises imports: two imports of overlapping files would otherwise wait on each other's rows.
IMPORT_LOCK_ID = 0x5B5C_1A0D
_LANGUAGE = re.compile(r"[a-z]{2}")


class ImportFailed(ValueError):
    """The import did not happen; the message is one line for a human."""


class _RowError(Exception):
    """A bad row: the column at fault, its value as written, why."""

    def __init__(self, column: str, value: str, why: str) -> None:
        super().__init__(why)
        self.column = column
        self.value = value


# ---------------------------------------------------------------- reading and validating


@dataclass
class ImportResult:
    rows_read: int = 0
    skipped: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # the first few: (line, why)
    subscribers_created: int = 0
    subscribers_updated: int = 0
    subscribers_unchanged: int = 0
    locations_added: int = 0
    locations_known: int = 0  # duplicates of existing locations or of earlier rows
    erased: int = 0  # rows of numbers erased at their owner's request: never imported
    opt_outs_kept: int = 0  # rows that would have re-subscribed an opted-out number
    report: Path | None = None  # the report file, when one was written
    seconds: float = 0.0

    def skipped_line(self) -> str:
        first = "; ".join(f"line {line}: {why}" for line, why in self.problems)
        more = ", ..." if self.skipped > len(self.problems) else ""
        return f"skipped {self.skipped} invalid row(s): {first}{more}"

    def summary(self) -> str:
        return (
            f"{self.rows_read} rows read ({self.skipped} skipped); subscribers: "
            f"{self.subscribers_created} created, {self.subscribers_updated} updated, "
            f"{self.subscribers_unchanged} unchanged; {self.locations_added} locations added "
            f"({self.locations_known} already known); {self.seconds:.2f} s"
        )


Record = tuple[int, str, float | None, float | None, str | None, str | None, str | None, str | None]
COLUMNS = ["line", "phone", "lon", "lat", "label", "language", "status", "postal_code"]


@dataclass(frozen=True)
class _Columns:
    """Where each column is in a row (None: the file has no such column)."""

    width: int
    phone: int
    lat: int | None
    lon: int | None
    postal_code: int | None
    label: int | None
    language: int | None
    status: int | None


def _coordinate(text: str, name: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        text = text.strip()
        why = f"{name}: {text!r} is not a number" if text else f"{name} is empty"
        raise _RowError(name, text, why) from None
    if not math.isfinite(value) or not -limit <= value <= limit:
        why = f"{name}: {text.strip()} is not in [-{limit:.0f}, {limit:.0f}]"
        raise _RowError(name, text.strip(), why)
    return value


def _header(fields: list[str] | None, name: str) -> _Columns:
    if fields is None:
        raise ImportFailed(
            f"{name} is empty: expected a header line with phone and lat,lon or postal_code"
        )
    known = REQUIRED + PLACES + OPTIONAL
    columns: dict[str, int] = {}
    for i, raw in enumerate(fields):
        column = raw.strip().lower()
        if column not in known:
            raise ImportFailed(
                f"{name} line 1: unknown column {raw.strip()!r} (known: "
                f"{', '.join(known)}; the file must be comma-separated)"
            )
        if column in columns:
            raise ImportFailed(f"{name} line 1: column {column!r} appears twice")
        columns[column] = i
    missing = [c for c in REQUIRED if c not in columns]
    if "postal_code" not in columns:
        missing += [c for c in ("lat", "lon") if c not in columns]
    elif ("lat" in columns) != ("lon" in columns):
        missing.append("lon" if "lat" in columns else "lat")
    if missing:
        raise ImportFailed(f"{name} line 1: missing column(s) {', '.join(missing)}")
    return _Columns(
        len(columns),
        columns["phone"],
        *(columns.get(c) for c in ("lat", "lon", "postal_code", "label", "language", "status")),
    )


Problem = Callable[[int, str, str, str], None]  # (line, column, value as written, why)


def read_rows(
    path: Path,
    result: ImportResult,
    *,
    skip_invalid: bool,
    chunk_rows: int = CHUNK_ROWS,
    postal_codes: frozenset[str] = frozenset(),
    on_problem: Problem | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[list[Record]]:
    """Valid rows of the file in chunks. Every bad row goes to `on_problem` and is counted in
    result (the first few with their reasons); with skip_invalid the rest is imported, without
    it the whole file is still read, so that every bad row is reported, and ImportFailed names
    the first once the file is read. `postal_codes` are those that exist; `on_progress` hears
    how many characters were read since it last heard."""
    name = path.name
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    first_problem: tuple[int, str] | None = None
    with f:
        read = 0

        def lines() -> Iterator[str]:
            nonlocal read
            for line in f:
                read += len(line)
                yield line

        reader = csv.reader(lines(), strict=True)
        try:
            columns = _header(next(reader, None), name)
            width = columns.width
            chunk: list[Record] = []
            for fields in reader:
                if len(fields) != width:
                    if not any(v.strip() for v in fields):
                        continue  # a blank line
                    result.rows_read += 1
                    problem = _RowError("", "", f"expected {width} fields, found {len(fields)}")
                else:
                    result.rows_read += 1
                    try:
                        record = _record(reader.line_num, fields, columns, postal_codes)
                    except _RowError as exc:
                        problem = exc
                    else:
                        if first_problem is None or skip_invalid:
                            chunk.append(record)
                        if len(chunk) >= chunk_rows:
                            yield chunk
                            chunk = []
                            if on_progress is not None:
                                on_progress(read)
                                read = 0
                        continue
                result.skipped += 1
                if len(result.problems) < EXAMPLES:
                    result.problems.append((reader.line_num, str(problem)))
                if first_problem is None:
                    first_problem = (reader.line_num, str(problem))
                if on_problem is not None:
                    on_problem(reader.line_num, problem.column, problem.value, str(problem))
            if chunk:
                yield chunk
            if on_progress is not None:
                on_progress(read)
        except UnicodeDecodeError:
            # Text is decoded a block at a time, ahead of the csv reader: find the line itself.
            line = _first_undecodable_line(path)
            raise ImportFailed(
                f"{name} line {line}: not UTF-8 text; nothing was imported"
            ) from None
        except csv.Error as exc:
            raise ImportFailed(
                f"{name} line {reader.line_num}: {exc}; nothing was imported"
            ) from None
    if first_problem is not None and not skip_invalid:
        line, why = first_problem
        more = result.skipped - 1
        others = f" (and {more} more bad row(s))" if more else ""
        raise ImportFailed(
            f"{name} line {line}: {why}{others}; nothing was imported "
            "(--skip-invalid imports the valid rows)"
        )


def _first_undecodable_line(path: Path) -> int:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _record(
    line: int, fields: list[str], columns: _Columns, postal_codes: frozenset[str]
) -> Record:
    raw_phone = fields[columns.phone]
    if not raw_phone.strip():
        raise _RowError("phone", "", "phone is empty")
    try:
        phone = normalise_phone(raw_phone)
    except PhoneError as exc:
        raise _RowError("phone", raw_phone.strip(), f"phone: {exc}") from None
    lat: float | None = None
    lon: float | None = None
    postal_code = None
    if columns.postal_code is not None:
        postal_code = fields[columns.postal_code].strip() or None
    if postal_code is None:
        if columns.lat is None or columns.lon is None:
            raise _RowError("postal_code", "", "postal_code is empty")
        lat = _coordinate(fields[columns.lat], "lat", 90.0)
        lon = _coordinate(fields[columns.lon], "lon", 180.0)
    else:
        if columns.lat is not None and columns.lon is not None:
            if fields[columns.lat].strip() or fields[columns.lon].strip():
                why = "give lat and lon or postal_code, not both"
                raise _RowError("postal_code", postal_code, why)
        if postal_code not in postal_codes:
            why = f"postal_code: {postal_code!r} is not a known postal code"
            raise _RowError("postal_code", postal_code, why)
    label = language = status = None
    if columns.label is not None:
        label = fields[columns.label].strip() or None
        if label is not None and len(label) > MAX_LABEL:
            raise _RowError("label", label, f"label is longer than {MAX_LABEL} characters")
    if columns.language is not None:
        language = fields[columns.language].strip().lower() or None
        if language is not None and not _LANGUAGE.fullmatch(language):
            why = f"language: {language!r} is not a two-letter code"
            raise _RowError("language", language, why)
    if columns.status is not None:
        status = fields[columns.status].strip().lower() or None
        if status is not None and status not in STATUSES:
            why = f"status: {status!r} is not one of active, pending, opted_out"
            raise _RowError("status", status, why)
    return (line, phone, lon, lat, label, language, status, postal_code)


# ---------------------------------------------------------------- the set-based part

CREATE_ROWS = """
CREATE TEMP TABLE import_rows (
    line integer NOT NULL, phone text NOT NULL, lon float8, lat float8,
    label text, language text, status text, postal_code text
) ON COMMIT DROP
"""

# One row per number: the last language and status the file gives for it (NULL: not given).
CREATE_SUBSCRIBERS = """
CREATE TEMP TABLE import_subscribers ON COMMIT DROP AS
SELECT phone,
       (array_agg(language ORDER BY line DESC) FILTER (WHERE language IS NOT NULL))[1] AS language,
       (array_agg(status ORDER BY line DESC) FILTER (WHERE status IS NOT NULL))[1] AS status
FROM import_rows
GROUP BY phone
"""

# Numbers whose owner had them erased (privacy.py keeps the SHA-256): their rows are taken out
# before anything else, reported, and never imported.
ERASED_ROWS = """
DELETE FROM import_rows r
WHERE sha256(convert_to(r.phone, 'UTF8')) IN (
    SELECT erased_hash FROM subscribers WHERE erased_hash IS NOT NULL)
RETURNING r.line
"""

# Rows that would re-subscribe a number its owner opted out (STOP, the leave page, a carrier):
# reported; the number stays opted out (its places are still added).
KEPT_OPT_OUTS = """
SELECT r.line, r.status FROM import_rows r JOIN subscribers s ON s.phone = r.phone
WHERE s.status = 'opted_out' AND r.status IN ('active', 'pending')
ORDER BY r.line
"""

# New numbers get the given values or the defaults; existing ones take only what the file gives
# (EXCLUDED carries the defaults, so the given values are looked up again), and an opted-out
# one stays opted out whatever the file says. Rows that would not change are not updated.
# xmax = 0 tells an inserted row from an updated one.
UPSERT_SUBSCRIBERS = """
WITH upserted AS (
    INSERT INTO subscribers AS s (phone, language, status)
    SELECT g.phone, coalesce(g.language, $1), coalesce(g.status, $2)
    FROM import_subscribers g
    ORDER BY g.phone
    ON CONFLICT (phone) DO UPDATE
    SET (language, status, updated_at) = (
        SELECT coalesce(g.language, s.language),
               CASE WHEN s.status = 'opted_out' THEN s.status
                    ELSE coalesce(g.status, s.status) END,
               now()
        FROM import_subscribers g WHERE g.phone = EXCLUDED.phone)
    WHERE EXISTS (
        SELECT 1 FROM import_subscribers g
        WHERE g.phone = EXCLUDED.phone
          AND (g.language <> s.language
               OR (g.status <> s.status AND s.status <> 'opted_out')))
    RETURNING (s.xmax = 0) AS created
)
SELECT count(*) FILTER (WHERE created) AS created,
       count(*) FILTER (WHERE NOT created) AS updated
FROM upserted
"""

# Locations in micro-degrees (see geo.SCALE), without repeats and without those the subscriber
# already has; of repeats within the file the first row's label is kept.
INSERT_LOCATIONS = """
INSERT INTO subscriber_locations (subscriber_id, label, position)
SELECT n.subscriber_id, n.label, point(n.x, n.y)
FROM (
    SELECT DISTINCT ON (s.id, r.lon * $1, r.lat * $1)
           s.id AS subscriber_id, r.label, r.lon * $1 AS x, r.lat * $1 AS y
    FROM import_rows r
    JOIN subscribers s ON s.phone = r.phone
    WHERE r.postal_code IS NULL
    ORDER BY s.id, r.lon * $1, r.lat * $1, r.line
) n
WHERE NOT EXISTS (
    SELECT 1 FROM subscriber_locations l
    WHERE l.subscriber_id = n.subscriber_id AND l.position[0] = n.x AND l.position[1] = n.y)
"""


# Postal codes as places (subscriber_zones), likewise without repeats.
INSERT_POSTAL_CODES = """
INSERT INTO subscriber_zones (subscriber_id, zone_id, label)
SELECT DISTINCT ON (s.id, z.id) s.id, z.id, r.label
FROM import_rows r
JOIN subscribers s ON s.phone = r.phone
JOIN zones z ON z.kind = 'postal_code' AND z.code = r.postal_code
WHERE r.postal_code IS NOT NULL
ORDER BY s.id, z.id, r.line
ON CONFLICT DO NOTHING
"""

POSTAL_CODES = "SELECT code FROM zones WHERE kind = 'postal_code'"


async def import_file(
    conn: asyncpg.Connection,
    path: Path,
    *,
    skip_invalid: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    report: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import the CSV file at path in one transaction; raise ImportFailed (nothing imported).
    With `report`, every row not imported as written (bad, an erased number, an opt-out kept)
    is listed there as CSV: line, column, value, reason; the file is written only if there is
    one."""
    started = time.perf_counter()
    result = ImportResult()
    notes = _Report(report)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK_ID)
            # Sorts and hashes of a large file stay in memory.
            await conn.execute("SET LOCAL work_mem = '64MB'")
            await conn.execute(CREATE_ROWS)
            codes = frozenset(r["code"] for r in await conn.fetch(POSTAL_CODES))
            try:
                for chunk in read_rows(
                    path,
                    result,
                    skip_invalid=skip_invalid,
                    chunk_rows=chunk_rows,
                    postal_codes=codes,
                    on_problem=notes.add,
                    on_progress=on_progress,
                ):
                    await conn.copy_records_to_table("import_rows", records=chunk, columns=COLUMNS)
            finally:
                notes.flush()
            await conn.execute("ANALYZE import_rows")
            erased = await conn.fetch(ERASED_ROWS)
            for r in erased:
                notes.add(
                    r["line"], "phone", "", "erased at the subscriber's request; not imported"
                )
            result.erased = len(erased)
            kept = await conn.fetch(KEPT_OPT_OUTS)
            for r in kept:
                notes.add(r["line"], "status", r["status"], "opted out by the subscriber; stays so")
            result.opt_outs_kept = len(kept)
            notes.flush()
            await conn.execute(CREATE_SUBSCRIBERS)
            await conn.execute("ALTER TABLE import_subscribers ADD PRIMARY KEY (phone)")
            await conn.execute("ANALYZE import_subscribers")
            numbers = await conn.fetchval("SELECT count(*) FROM import_subscribers")
            counts = await conn.fetchrow(UPSERT_SUBSCRIBERS, DEFAULT_LANGUAGE, DEFAULT_STATUS)
            assert counts is not None
            status = await conn.execute(INSERT_LOCATIONS, SCALE)
            postal = await conn.execute(INSERT_POSTAL_CODES)
            result.subscribers_created = counts["created"]
            result.subscribers_updated = counts["updated"]
            result.subscribers_unchanged = numbers - counts["created"] - counts["updated"]
            result.locations_added = int(status.split()[-1]) + int(postal.split()[-1])
            result.locations_known = (
                result.rows_read - result.skipped - result.erased - result.locations_added
            )
    except asyncpg.PostgresError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportFailed(
            f"the database refused the import: {first}; nothing was imported"
        ) from None
    finally:
        notes.close()
    result.report = notes.written
    if result.locations_added >= 10_000:
        # Fresh planner statistics for the fan-out after a large import.
        await conn.execute("ANALYZE subscribers; ANALYZE subscriber_locations")
    result.seconds = time.perf_counter() - started
    return result


class _Report:
    """The report file of rows not imported as written, opened at the first one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.written: Path | None = None
        self._file: TextIO | None = None
        self._writer: Any = None

    def add(self, line: int, column: str, value: str, why: str) -> None:
        if self.path is None:
            return
        if self._writer is None:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["line", "column", "value", "reason"])
            self.written = self.path
        self._writer.writerow([line, column, value, why])

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
