"""Bulk import: `broadcaster import-subscribers` of a synthetic CSV into a fresh database.

The file has --rows rows (one per location) in a temporary directory: numbers in the formats
people type (mostly '26123456' and '+4526123456', one in ten with spaces, which takes
phonenumbers' slow path), one in ten subscribers with a second location, a few pending or opted
out, some English-speaking. The command runs as a child process; the wall time includes its start.

    python bench/import_subscribers.py [--rows 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BOX, fresh_database, postgres_version, report, run

from broadcaster import procs
from broadcaster.database import connect

TARGET_SECONDS = 30.0  # for 500,000 rows on 2 cores (the issue)
MAX_ROWS = 3_000_000  # numbers 26000000-28999999


def phone_text(i: int, style: int) -> str:
    """The i-th valid Danish mobile number (26xxxxxx-28xxxxxx) written in one of four styles."""
    digits = f"2{6 + i // 1_000_000}{i % 1_000_000:06d}"
    if style < 6:
        return digits
    if style < 9:
        return "+45" + digits
    return f"+45 {digits[:2]} {digits[2:4]} {digits[4:6]} {digits[6:]}"


def write_csv(path: Path, rows: int, seed: int = 7) -> tuple[int, int]:
    """Write the file; return (distinct numbers, rows)."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(BOX[0], BOX[2], rows).round(6)
    lat = rng.uniform(BOX[1], BOX[3], rows).round(6)
    style = rng.integers(0, 10, rows)
    roll = rng.random(rows)
    english = rng.random(rows) < 0.05
    written = numbers = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["phone", "lat", "lon", "label", "language", "status"])
        while written < rows:
            i = numbers
            numbers += 1
            status = (
                "opted_out" if roll[written] < 0.01 else "pending" if roll[written] < 0.02 else ""
            )
            language = "en" if english[written] else "da"
            phone = phone_text(i, int(style[written]))
            out.writerow([phone, lat[written], lon[written], "home", language, status])
            written += 1
            if i % 10 == 0 and written < rows:
                out.writerow([phone, lat[written], lon[written], "work", "", ""])
                written += 1
    return numbers, rows


async def _import(path: Path, url: str) -> tuple[float, float | None]:
    """Run the command; (wall seconds including its start, seconds it reports itself)."""
    t0 = time.perf_counter()
    child = await asyncio.create_subprocess_exec(
        *procs.broadcaster_argv("import-subscribers", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "DATABASE_URL": url, "BROADCASTER_LOG_LEVEL": "warning"},
    )
    out, err = await child.communicate()
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        sys.exit(f"import failed ({child.returncode}): {err.decode().strip()}")
    summary = out.decode().strip().splitlines()[-1]
    inside = re.search(r"([0-9.]+) s$", summary)
    return wall, float(inside.group(1)) if inside else None


async def main(rows: int, keep: bool) -> None:
    if rows > MAX_ROWS:
        sys.exit(f"at most {MAX_ROWS:,} rows (the synthetic numbers run out)")
    url = await fresh_database("broadcaster_bench_import")
    tmp = Path(tempfile.mkdtemp(prefix="broadcaster-bench-import-"))
    try:
        path = tmp / "subscribers.csv"
        t0 = time.perf_counter()
        numbers, _ = write_csv(path, rows)
        generated = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        wall, inside = await _import(path, url)
        # The same file again: every row is known, nothing may change (the idempotent path).
        again, inside_again = await _import(path, url)
        conn = await connect(url)
        try:
            subscribers = await conn.fetchval("SELECT count(*) FROM subscribers")
            locations = await conn.fetchval("SELECT count(*) FROM subscriber_locations")
        finally:
            await conn.close()
    finally:
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if (subscribers, locations) != (numbers, rows):
        sys.exit(
            f"expected {numbers} subscribers and {rows} locations, found {subscribers}, {locations}"
        )
    figures = {
        "rows": rows,
        "subscribers": subscribers,
        "file_mb": round(size_mb, 1),
        "seconds": round(wall, 2),
        "seconds_in_import": inside,
        "rows_per_second": round(rows / wall),
        "reimport_seconds": round(again, 2),
        "reimport_seconds_in_import": inside_again,
        "generate_seconds": round(generated, 2),
        "target_seconds_for_500k": TARGET_SECONDS,
        "postgres": await postgres_version(url),
    }
    report(
        "import_subscribers",
        figures,
        f"{rows:,} rows ({subscribers:,} subscribers, {size_mb:.0f} MB) imported in {wall:.1f} s "
        f"({rows / wall:,.0f} rows/s, command start included; the issue's target: 500,000 in "
        f"≤ {TARGET_SECONDS:.0f} s); the same file again (nothing changes) {again:.1f} s",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV file")
    args = parser.parse_args()
    run(main(args.rows, args.keep))
