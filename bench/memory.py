"""Dispatcher memory during a large broadcast: peak RSS per broadcast size, to show it is flat.

For each size: a fresh database with that many subscribers inside the zone, the GatewayAPI
simulator with receipts held (so they cost the dispatcher nothing), one `broadcaster dispatcher`
with a rate limit far above what the machine does, and one alert over the whole zone. The
dispatcher's /proc/PID/status is sampled every --interval seconds (VmRSS, and VmHWM, the kernel's
own high-water mark) from before the alert until every delivery is 'sent'.

    python bench/memory.py [--recipients 100000 1000000] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

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
    start_dispatcher,
    start_simulator,
)

from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area

RATE = 10_000_000  # far above anything the machine does: the limiter never waits


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB (Linux)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


async def one_size(recipients: int, interval: float, timeout: float) -> dict[str, Any]:
    url = await fresh_database("broadcaster_bench_memory")
    await seed_box(url, recipients)
    with children() as (started, log_dir):
        sim = start_simulator(started, log_dir, "--hold-receipts")
        config = gateway_toml(log_dir / "gw.toml", sim, rate=RATE, max_batch=1000, concurrency=4)
        dispatcher = start_dispatcher(log_dir, url, config)
        started.append(dispatcher)
        simulator = started[0]
        await asyncio.sleep(1.0)  # settled: imports done, pool open, heartbeat written
        idle = memory_kb(dispatcher.pid)
        conn = await connect(url)
        try:
            t0 = time.time()
            alert_id, _ = await create_alert(
                conn, NewAlert("bench", ZONE, parse_area(ZONE), "normal", None, None), None, None
            )
            samples = 0
            peak_rss = idle["VmRSS"]
            next_check = 0.0
            status = "queued"
            while time.time() - t0 < timeout:
                peak_rss = max(peak_rss, memory_kb(dispatcher.pid)["VmRSS"])
                samples += 1
                if time.time() >= next_check:
                    # The alert completes when nothing is left to submit (every delivery sent).
                    status = await conn.fetchval(
                        "SELECT status FROM alerts WHERE id = $1", alert_id
                    )
                    if status not in ("queued", "dispatching"):
                        break
                    next_check = time.time() + 0.5
                await asyncio.sleep(interval)
            seconds = time.time() - t0
            final = memory_kb(dispatcher.pid)
            sim_memory = memory_kb(simulator.pid)
            sent = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status = 'sent'", alert_id
            )
        finally:
            await conn.close()
    if sent != recipients:
        raise RuntimeError(f"{sent} of {recipients} deliveries sent (alert {status})")
    return {
        "recipients": recipients,
        "seconds": round(seconds, 2),
        "samples": samples,
        "idle_rss_mb": round(idle["VmRSS"] / 1024, 1),
        "peak_rss_sampled_mb": round(peak_rss / 1024, 1),
        "peak_rss_vmhwm_mb": round(final["VmHWM"] / 1024, 1),
        "growth_mb": round((final["VmHWM"] - idle["VmRSS"]) / 1024, 1),
        "simulator_rss_mb": round(sim_memory["VmRSS"] / 1024, 1),  # it keeps every message
        "postgres": await postgres_version(url),
    }


async def main(sizes: list[int], interval: float, timeout: float) -> None:
    results = [await one_size(n, interval, timeout) for n in sorted(sizes)]
    figures = {f"recipients_{r['recipients']}": r for r in results}
    text = ", ".join(
        f"{r['recipients']:,} recipients: peak {r['peak_rss_vmhwm_mb']:.0f} MB "
        f"(idle {r['idle_rss_mb']:.0f} MB)"
        for r in results
    )
    if len(results) > 1:
        small, large = results[0], results[-1]
        ratio = large["peak_rss_vmhwm_mb"] / small["peak_rss_vmhwm_mb"]
        figures["peak_ratio_largest_to_smallest"] = round(ratio, 2)
        text += f"; {large['recipients'] / small['recipients']:.0f}x the recipients, "
        text += f"{ratio:.2f}x the peak"
    report("memory", figures, f"dispatcher RSS: {text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipients", type=int, nargs="+", default=[100_000, 1_000_000], help="broadcast sizes"
    )
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per size, seconds")
    args = parser.parse_args()
    run(main(args.recipients, args.interval, args.timeout))
