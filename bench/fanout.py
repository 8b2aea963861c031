"""Fan-out time: one alert over a zone holding half of --total subscribers.

Case `box` (reported as "fanout"): half of the subscribers live uniformly inside the benchmark
box (the alert's zone, a polygon of four vertices), the other half in a larger box around it but
outside the zone; ids are shuffled so the zone's subscribers are spread over the whole table, as
registration order would have them. Each repeat creates a fresh alert on that zone and times the
real `broadcaster.dispatch.fanout.fan_out_next` (one transaction: claim the alert, INSERT ...
SELECT the deliveries, mark it); deliveries are truncated between repeats. Target from the
issue: 500,000 of 1,000,000 in at most 3 s.

Cases `postal_codes` and `zones` (reported as "fanout_postal_codes", "fanout_zones"), on a
second database seeded with the shipped postal codes: 5 % of the subscribers are registered by
a postal code instead of a point. Half of everyone is in POSTAL_TARGET, seven postal codes
around Hillerød (their real boundaries, 22 to 61 vertices each): 95 % of that half with a point
inside them, 5 % registered by one of them; the other half with a point elsewhere in the
district, or registered by a postal code far from them. The alert is {"postal_codes": [...]} of
the seven, or {"zones": [...]} of their names; both must reach exactly half.

Next to it, the machine's floor for the same writes, measured just before each run: as many
rows inserted from generate_series into a copy of deliveries with its indexes, defaults and
constraints (`LIKE deliveries INCLUDING ALL`), no zone test and no join. The fan-out's cost is
mostly these writes, so the ratio of the two says what the zone test and the joins add, and the
floor says how fast this machine writes (the issue's machine: about 1.9 s for 500,000). Issue 14's
target for named zones and postal codes: within 1.3 times the floor.

    python bench/fanout.py [--total 1000000] [--repeats 3] [--explain]
                           [--cases box postal_codes zones]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BOX, ZONE, fresh_database, postgres_version, report, run

from broadcaster.database import connect
from broadcaster.dispatch.fanout import FANOUT_POLYGON, FANOUT_SETTINGS, fan_out_next
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import SCALE, parse_area

# Everyone outside the zone lives in this larger box around it (and not inside BOX).
MARGIN = 0.25
OUTER = (BOX[0] - MARGIN, BOX[1] - MARGIN, BOX[2] + MARGIN, BOX[3] + MARGIN)
TARGET_SECONDS = 3.0


def positions(total: int, inside: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, is_inside) for `total` subscribers in id order, `inside` of them in BOX."""
    rng = np.random.default_rng(seed)
    is_inside = np.zeros(total, dtype=bool)
    is_inside[rng.permutation(total)[:inside]] = True
    lon = np.empty(total)
    lat = np.empty(total)
    lon[is_inside] = rng.uniform(BOX[0], BOX[2], inside)
    lat[is_inside] = rng.uniform(BOX[1], BOX[3], inside)
    outside = total - inside
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    have = 0
    while have < outside:  # rejection sampling: the outer box minus the zone
        x = rng.uniform(OUTER[0], OUTER[2], 2 * outside)
        y = rng.uniform(OUTER[1], OUTER[3], 2 * outside)
        keep = ~((x >= BOX[0]) & (x <= BOX[2]) & (y >= BOX[1]) & (y <= BOX[3]))
        xs.append(x[keep])
        ys.append(y[keep])
        have += int(keep.sum())
    lon[~is_inside] = np.concatenate(xs)[:outside]
    lat[~is_inside] = np.concatenate(ys)[:outside]
    return lon, lat, is_inside


async def seed_half_inside(url: str, total: int, inside: int, seed: int = 1) -> None:
    """`total` active subscribers with one location each, `inside` of them in the zone (COPY)."""
    lon, lat, _ = positions(total, inside, seed)
    conn = await connect(url)
    try:
        await conn.copy_records_to_table(
            "subscribers",
            columns=["id", "phone"],
            records=((i + 1, f"+453{i:07d}") for i in range(total)),
        )
        await conn.copy_records_to_table(
            "subscriber_locations",
            columns=["subscriber_id", "position"],
            records=((i + 1, (float(lon[i]) * SCALE, float(lat[i]) * SCALE)) for i in range(total)),
        )
        await conn.execute("SELECT setval('subscribers_id_seq', $1)", total)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def explain(url: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the fan-out INSERT for a new alert, rolled back."""
    conn = await connect(url)
    try:
        await conn.execute("TRUNCATE deliveries")
        alert_id, _ = await create_alert(
            conn, NewAlert("explain", ZONE, parse_area(ZONE), "normal", None, None), None, None
        )
        tr = conn.transaction()
        await tr.start()
        try:
            for name, value in FANOUT_SETTINGS.items():  # as fan_out_next sets them
                await conn.execute(f"SET LOCAL {name} = '{value}'")
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + FANOUT_POLYGON, alert_id, 2)
        finally:
            await tr.rollback()
        await conn.execute("UPDATE alerts SET status = 'cancelled' WHERE id = $1", alert_id)
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


async def checkpoint(conn: Any) -> None:
    """Write out the last run's changes now, so that no checkpoint of them falls in the next
    timed run (skipped when not a superuser on an external server)."""
    try:
        await conn.execute("CHECKPOINT")
    except Exception:
        pass


FLOOR_INSERT = (
    "INSERT INTO bench_floor (alert_id, subscriber_id, priority) "
    "SELECT 1, g, 2 FROM generate_series(1, $1::int) g"
)


async def floor_once(conn: Any, rows: int) -> float:
    """Seconds to insert `rows` deliveries-shaped rows into an empty copy of the table."""
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (LIKE deliveries INCLUDING ALL)")
    await conn.execute("TRUNCATE bench_floor")
    await checkpoint(conn)
    t0 = time.perf_counter()
    await conn.execute(FLOOR_INSERT, rows)
    seconds = time.perf_counter() - t0
    await conn.execute("TRUNCATE bench_floor")
    return seconds


async def time_fanouts(
    url: str, repeats: int, expected: int, new_alert: Callable[[Any], Awaitable[Any]]
) -> tuple[list[float], list[float]]:
    """Seconds of `fan_out_next` for `repeats` fresh alerts made by new_alert(conn), and of the
    write floor measured just before each: on a machine whose speed moves (a shared one), the
    ratio of each pair is steadier than the ratio of two medians taken minutes apart."""
    conn = await connect(url)
    runs: list[float] = []
    floors: list[float] = []
    try:
        for _ in range(repeats):
            floors.append(await floor_once(conn, expected))
            await conn.execute("TRUNCATE deliveries")
            await new_alert(conn)
            await checkpoint(conn)
            t0 = time.perf_counter()
            result = await fan_out_next(conn)
            seconds = time.perf_counter() - t0
            assert result is not None
            if result.recipients != expected:
                raise RuntimeError(f"fan-out found {result.recipients} of {expected} recipients")
            runs.append(seconds)
        await conn.execute("TRUNCATE deliveries")
        await conn.execute("DROP TABLE IF EXISTS bench_floor")
    finally:
        await conn.close()
    return runs, floors


def figures(
    total: int, inside: int, runs: list[float], floor: list[float], seed_seconds: float
) -> dict[str, Any]:
    best, median = min(runs), statistics.median(runs)
    floor_median = statistics.median(floor)
    scaled = median * 500_000 / inside  # the case: 500,000 recipients
    return {
        "subscribers": total,
        "recipients": inside,
        "repeats": len(runs),
        "seconds": [round(s, 3) for s in runs],
        "seconds_median": round(median, 3),
        "seconds_best": round(best, 3),
        "rows_per_s_median": round(inside / median, 1),
        "target_seconds_for_500k": TARGET_SECONDS,
        "seconds_for_500k_at_median_rate": round(scaled, 2),
        "meets_target": scaled <= TARGET_SECONDS,
        "write_floor_seconds": [round(s, 3) for s in floor],
        "write_floor_seconds_median": round(floor_median, 3),
        "ratio_to_write_floor": round(median / floor_median, 2),
        "ratio_to_write_floor_paired": [round(r / f, 2) for r, f in zip(runs, floor, strict=True)],
        "ratio_to_write_floor_paired_median": round(
            statistics.median(r / f for r, f in zip(runs, floor, strict=True)), 2
        ),
        "seed_seconds": round(seed_seconds, 1),
    }


def human(what: str, f: dict[str, Any]) -> str:
    median, floor = f["seconds_median"], f["write_floor_seconds_median"]
    return (
        f"{f['recipients']:,} of {f['subscribers']:,} subscribers {what}: fan-out median "
        f"{median:.2f} s (best {f['seconds_best']:.2f} s, {f['rows_per_s_median']:,.0f} rows/s); "
        f"at that rate 500,000 take {f['seconds_for_500k_at_median_rate']:.2f} s (target ≤ "
        f"{TARGET_SECONDS:.0f} s); writing as many rows alone {floor:.2f} s (fan-out "
        f"{f['ratio_to_write_floor']:.2f} times that; each run against the floor measured "
        f"just before it: median {f['ratio_to_write_floor_paired_median']:.2f})"
    )


async def box_case(total: int, repeats: int, show_plan: bool) -> None:
    inside = total // 2
    url = await fresh_database("broadcaster_bench_fanout")
    t0 = time.perf_counter()
    await seed_half_inside(url, total, inside)
    seed_seconds = time.perf_counter() - t0
    if show_plan:
        print(await explain(url), file=sys.stderr, flush=True)

    async def box_alert(conn: Any) -> None:
        alert = NewAlert("bench", ZONE, parse_area(ZONE), "normal", None, None)
        await create_alert(conn, alert, None, None)

    runs, floor = await time_fanouts(url, repeats, inside, box_alert)
    result = figures(total, inside, runs, floor, seed_seconds)
    result["postgres"] = await postgres_version(url)
    report("fanout", result, human("in the zone", result))


async def postal_cases(total: int, repeats: int, cases: list[str]) -> None:
    # Imported here: the box case also runs against code from before named zones existed.
    from postal_seed import POSTAL_TARGET, named_alert, seed_postal

    url = await fresh_database("broadcaster_bench_fanout_postal")
    t0 = time.perf_counter()
    seeded = await seed_postal(url, total)
    seed_seconds = time.perf_counter() - t0
    for case in cases:

        async def alert(conn: Any, case: str = case) -> None:
            await named_alert(conn, case)

        runs, floor = await time_fanouts(url, repeats, seeded.reached, alert)
        result = figures(total, seeded.reached, runs, floor, seed_seconds)
        result |= {
            "registered_by_postal_code": seeded.registered,
            "reached_by_postal_code": seeded.registered_reached,
            "postal_codes": list(POSTAL_TARGET),
            "postgres": await postgres_version(url),
        }
        what = "in seven postal codes" + (" named as zones" if case == "zones" else "")
        report(f"fanout_{case}", result, human(what, result))


async def main(total: int, repeats: int, show_plan: bool, cases: list[str]) -> None:
    if "box" in cases:
        await box_case(total, repeats, show_plan)
    named = [c for c in cases if c != "box"]
    if named:
        await postal_cases(total, repeats, named)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1_000_000, help="subscribers (half inside)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="print the plan to stderr")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=["box", "postal_codes", "zones"],
        default=["box", "postal_codes", "zones"],
    )
    args = parser.parse_args()
    if args.quick:
        args.total, args.repeats = 20_000, 2
    run(main(args.total, args.repeats, args.explain, args.cases))
