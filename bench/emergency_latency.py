"""Time from POST /v1/alerts (emergency) to the gateway's first submit for that alert, idle and
while a large normal broadcast runs; and alert-creation latency under that load.

`broadcaster api`, `broadcaster dispatcher` and the GatewayAPI simulator (receipts held) run as
child processes; subscribers live in one box, the normal broadcast covers all of them, each
emergency covers a small circle of a few dozen.

    python bench/emergency_latency.py [--subscribers 500000] [--samples 20] [--rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ZONE,
    children,
    fresh_database,
    postgres_version,
    report,
    run,
    seed_box,
    start_service,
)

from broadcaster.auth import create_api_key
from broadcaster.database import connect

SMALL = {"type": "Circle", "center": [12.30, 55.92], "radius_m": 150}


def _timeline(sim: str) -> list[list]:
    with urllib.request.urlopen(f"{sim}/_sim/timeline", timeout=10) as r:
        return list(json.loads(r.read()))


async def _first_submit(sim: str, alert_id: int, deadline: float) -> float | None:
    while time.time() < deadline:
        for t, _, userref in _timeline(sim):
            if userref == str(alert_id):
                return float(t)
        await asyncio.sleep(0.005)
    return None


async def _emergencies(
    http: aiohttp.ClientSession,
    api: str,
    sim: str,
    n: int,
) -> tuple[list[float], list[float]]:
    to_submit, create = [], []
    for i in range(n):
        body = {"message": f"Politi: akut {i}", "area": SMALL, "priority": "emergency"}
        t0 = time.time()
        async with http.post(f"{api}/v1/alerts", json=body) as r:
            alert = await r.json()
        create.append((time.time() - t0) * 1000)
        first = await _first_submit(sim, alert["id"], t0 + 30)
        if first is not None:
            to_submit.append((first - t0) * 1000)
        await asyncio.sleep(0.2)
    return to_submit, create


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def main(subscribers: int, samples: int, rate: float) -> None:
    url = await fresh_database("broadcaster_bench_emergency")
    await seed_box(url, subscribers)
    conn = await connect(url)
    try:
        key = await create_api_key(conn, "bench")
    finally:
        await conn.close()
    with children() as (started, log_dir):
        # The production layout: API and dispatcher as separate processes.
        service = start_service(
            started, log_dir, url, rate=rate or 1_000_000, sim_args=["--hold-receipts"]
        )
        api, sim = service.api, service.sim
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            idle_submit, idle_create = await _emergencies(http, api, sim, min(samples, 10))
            async with http.post(
                f"{api}/v1/alerts",
                json={"message": "Politi: stor udsendelse", "area": ZONE, "priority": "normal"},
            ) as r:
                big = (await r.json())["id"]
            while not any(u == str(big) for _, _, u in _timeline(sim)):
                await asyncio.sleep(0.05)
            busy_submit, busy_create = await _emergencies(http, api, sim, samples)
            async with http.get(f"{api}/v1/alerts/{big}") as r:
                progress = await r.json()
    sent = progress["deliveries"]["sent"]
    figures = {
        "subscribers": subscribers,
        "samples": samples,
        "idle_to_first_submit_ms": {"p50": _pct(idle_submit, 0.5), "p99": _pct(idle_submit, 0.99)},
        "busy_to_first_submit_ms": {"p50": _pct(busy_submit, 0.5), "p99": _pct(busy_submit, 0.99)},
        "busy_alert_create_ms": {"p50": _pct(busy_create, 0.5), "p99": _pct(busy_create, 0.99)},
        "idle_alert_create_ms_p50": _pct(idle_create, 0.5),
        "big_broadcast_sent_when_done": sent,
        "big_broadcast_recipients": progress["recipients"],
        "postgres": await postgres_version(url),
    }
    report(
        "emergency_latency",
        figures,
        f"emergency POST → first submit: idle p50 {figures['idle_to_first_submit_ms']['p50']} "
        f"ms, during a {subscribers:,} broadcast p50 "
        f"{figures['busy_to_first_submit_ms']['p50']} / p99 "
        f"{figures['busy_to_first_submit_ms']['p99']} ms; alert creation p99 "
        f"{figures['busy_alert_create_ms']['p99']} ms "
        f"(mean {statistics.fmean(busy_create) if busy_create else float('nan'):.1f} ms)",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0, help="gateway limit (0: none)")
    args = parser.parse_args()
    run(main(args.subscribers, args.samples, args.rate))
