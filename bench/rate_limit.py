"""Rate-limit accuracy across dispatcher processes.

Two `broadcaster dispatcher` processes share one gateway whose account limit is --rate msg/s; a
broadcast much larger than --seconds x --rate runs through the GatewayAPI simulator (receipts
held so they cost no CPU), and the simulator's timeline of accepted recipients is cut into
one-second windows.

    python bench/rate_limit.py [--rate 500] [--seconds 60] [--dispatchers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ZONE,
    children,
    fresh_database,
    gateway_toml,
    postgres_version,
    report,
    run,
    seed_box,
    start_simulator,
)

from broadcaster import procs
from broadcaster.alerts import NewAlert, create_alert
from broadcaster.database import connect
from broadcaster.geo import parse_area


async def main(rate: float, seconds: int, dispatchers: int, max_batch: int) -> None:
    url = await fresh_database("broadcaster_bench_rate")
    recipients = int(rate * (seconds + 15))
    await seed_box(url, recipients)
    with children() as (started, log_dir):
        sim = start_simulator(started, log_dir, "--hold-receipts")
        config = gateway_toml(log_dir / "gw.toml", sim, rate=rate, max_batch=max_batch)
        env = {
            "DATABASE_URL": url,
            "BROADCASTER_CONFIG": str(config),
            "BROADCASTER_LOG_LEVEL": "info",
            "BROADCASTER_POLL_INTERVAL": "0.2",
        }
        for i in range(dispatchers):
            started.append(
                procs.start(
                    f"dispatcher-{i}",
                    procs.broadcaster_argv("dispatcher"),
                    env=env,
                    log_dir=log_dir,
                    ready_line="dispatcher started",
                )
            )
        await asyncio.sleep(2.5)  # every dispatcher has seen the others
        conn = await connect(url)
        try:
            await create_alert(
                conn, NewAlert("bench", ZONE, parse_area(ZONE), "normal", None, None), None, None
            )
        finally:
            await conn.close()
        first = None
        while first is None:
            timeline = _timeline(sim)
            first = timeline[0][0] if timeline else None
            await asyncio.sleep(0.1)
        await asyncio.sleep(seconds + 1.5 - (time.time() - first))
        timeline = _timeline(sim)
    windows = [0] * seconds
    for t, n, _ in timeline:
        k = int(t - first)
        if 0 <= k < seconds:
            windows[k] += n
    total = sum(windows)
    steady = windows[1:]
    steady_rate = sum(steady) / len(steady)
    figures = {
        "limit": rate,
        "dispatchers": dispatchers,
        "seconds": seconds,
        "rate_including_initial_burst": round(total / seconds, 1),
        "rate_steady": round(steady_rate, 1),
        "steady_error_percent": round((steady_rate - rate) / rate * 100, 2),
        "max_window": max(windows),
        "min_window_steady": min(steady),
        "windows_above_limit_plus_burst": sum(1 for w in windows if w > 2 * rate),
        "windows_above_limit_after_first": sum(1 for w in steady if w > rate),
        "postgres": await postgres_version(url),
    }
    report(
        "rate_limit",
        figures,
        f"{dispatchers} dispatchers at a {rate:.0f} msg/s limit: steady {steady_rate:.1f} "
        f"msg/s ({figures['steady_error_percent']:+.2f} %), busiest 1-s window "
        f"{max(windows)}, windows above limit+burst: "
        f"{figures['windows_above_limit_plus_burst']}",
    )


def _timeline(sim: str) -> list[list]:
    with urllib.request.urlopen(f"{sim}/_sim/timeline", timeout=10) as r:
        return list(json.loads(r.read()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=100)
    args = parser.parse_args()
    run(main(args.rate, args.seconds, args.dispatchers, args.max_batch))
