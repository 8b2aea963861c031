"""Preview time: POST /v1/alerts/preview of a zone holding half of --total subscribers.

The subscribers are seeded as bench/fanout.py seeds them (half uniformly inside the benchmark
box, the alert's zone, the other half around it, ids shuffled). The API runs in this process
(httpx over ASGI, so the figure is the application's: validation, the count, the answer) and is
asked --requests times in a row, one at a time, for the box polygon and for a circle inside it,
and on a second database seeded as bench/fanout.py's postal-code case, for its seven postal
codes (500,000 recipients, 25,000 of them registered by postal code); p50 and p99 are reported
against the issue's target (p99 <= 100 ms for 500,000 recipients).

Beside it: the exact count of the same recipients (the fan-out's statement, every row counted)
timed on its own, which is why the preview estimates zones with more than EXACT_LIMIT of them;
and the estimate's error against that exact count over every answer (mean and largest relative
error, and how often the exact count fell outside the answer's 95 % margin).

    python bench/preview.py [--total 1000000] [--requests 200] [--quick]
                            [--cases box circle postal_codes]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import seed_half_inside
from harness import ZONE, fresh_database, postgres_version, report, run

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.database import connect
from broadcaster.ingest import preview
from broadcaster.ingest.alerts import NewAlert
from broadcaster.ingest.geo import parse_area
from broadcaster.ingest.zones import resolve_postal_codes
from broadcaster.settings import GatewaySettings, load_settings

TARGET_P99_MS = 100.0
# A circle in the box's middle, about a fifth of it.
CIRCLE = {"type": "Circle", "center": [12.325, 55.925], "radius_m": 4000}


async def exact_count(url: str, area: dict[str, Any]) -> tuple[int, float]:
    """Every recipient counted by the shared statement, and the seconds it took."""
    conn = await connect(url)
    try:
        if "postal_codes" in area:
            found = await resolve_postal_codes(conn, area["postal_codes"])
            targets = tuple(found[c] for c in area["postal_codes"])
            alert = NewAlert("x", area, None, "normal", None, None, targets)
        else:
            alert = NewAlert("x", area, parse_area(area), "normal", None, None)
        sql = preview._count(preview.ZONES_GIVEN, preview._area_type(alert), False)
        started = time.perf_counter()
        count = await conn.fetchval(sql, *preview._args(alert), column=1)
        return int(count), time.perf_counter() - started
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    url: str, cases: list[tuple[str, dict[str, Any]]], total: int, requests: int
) -> None:
    conn = await connect(url)
    try:
        key = await create_api_key(conn, "bench")
    finally:
        await conn.close()
    settings = load_settings(
        database_url=url,
        quiet_hours_start="00:00",
        quiet_hours_end="00:00",
        gateways=[
            GatewaySettings(
                name="primary",
                type="gatewayapi",
                base_url="http://127.0.0.1:9",
                rate_per_second=500,
                price_per_segment=0.21,
            )
        ],
    )
    app = create_app(settings, url)
    version = await postgres_version(url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for name, area in cases:
                exact, exact_seconds = await exact_count(url, area)
                body = {"message": "Politiet: indbrud i området. Ring 114.", "area": area}
                headers = {"Authorization": f"Bearer {key}"}
                for _ in range(5):  # warm-up: connections, plans, caches
                    await client.post("/v1/alerts/preview", json=body, headers=headers)
                times: list[float] = []
                errors: list[float] = []
                outside = 0
                for _ in range(requests):
                    started = time.perf_counter()
                    r = await client.post("/v1/alerts/preview", json=body, headers=headers)
                    times.append((time.perf_counter() - started) * 1000)
                    r.raise_for_status()
                    got = r.json()["recipients"]
                    errors.append(abs(got["count"] - exact) / max(exact, 1))
                    outside += abs(got["count"] - exact) > got["margin"]
                p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
                figures = {
                    "case": name,
                    "total": total,
                    "recipients": exact,
                    "requests": requests,
                    "p50_ms": round(p50, 1),
                    "p99_ms": round(p99, 1),
                    "max_ms": round(max(times), 1),
                    "estimated": not got["exact"],
                    "mean_error": round(statistics.fmean(errors), 5),
                    "max_error": round(max(errors), 5),
                    "outside_margin": outside,
                    "exact_count_seconds": round(exact_seconds, 3),
                    "target_p99_ms": TARGET_P99_MS,
                    "met": p99 <= TARGET_P99_MS,
                    "postgres": version,
                }
                report(
                    f"preview_{name}",
                    figures,
                    f"{exact:,} recipients of {total:,}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                    f"(target <= {TARGET_P99_MS:.0f}); "
                    + (
                        f"estimated, error mean {statistics.fmean(errors):.2%} max "
                        f"{max(errors):.2%}, {outside} of {requests} outside the margin; "
                        if not got["exact"]
                        else "exact; "
                    )
                    + f"an exact count alone {exact_seconds * 1000:.0f} ms",
                )


async def main(total: int, requests: int, cases: list[str]) -> None:
    geometric = [(c, a) for c, a in (("box", ZONE), ("circle", CIRCLE)) if c in cases]
    if geometric:
        url = await fresh_database("broadcaster_bench_preview")
        await seed_half_inside(url, total, total // 2)
        await measure(url, geometric, total, requests)
    if "postal_codes" in cases:
        from postal_seed import POSTAL_TARGET, seed_postal

        url = await fresh_database("broadcaster_bench_preview_postal")
        await seed_postal(url, total)
        await measure(
            url, [("postal_codes", {"postal_codes": list(POSTAL_TARGET)})], total, requests
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1_000_000, help="subscribers (half inside)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["box", "circle", "postal_codes"],
        choices=["box", "circle", "postal_codes"],
    )
    args = parser.parse_args()
    if args.quick:
        args.total, args.requests = 50_000, 20
    run(main(args.total, args.requests, args.cases))
