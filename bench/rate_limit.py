"""Rate-limit accuracy across dispatcher processes, measured at the gateway.

Dispatcher processes share one gateway whose account limit is --rate msg/s, through the
GatewayAPI simulator (receipts held so they cost no CPU), whose timeline of accepted recipients
is read as a provider counts: every one-second window sliding over the arrivals.

Cases (--case, default all):
- steady: --dispatchers processes already running, a broadcast much larger than --seconds x
  --rate; the windows of the first --seconds seconds after the first submission.
- start: an emergency alert to --recipients subscribers queued first, then --dispatchers
  processes started at the same moment (the first second is where a per-process bucket failed).
- churn: the same with three processes started together, a fourth added at a third of the
  broadcast and one killed (SIGKILL) at two thirds.

    python bench/rate_limit.py [--rate 500] [--seconds 60] [--dispatchers 2] [--case all]
    python bench/rate_limit.py --case start --rate 300 --max-batch 10 --recipients 6000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ZONE,
    children,
    fresh_database,
    gateway_toml,
    get_json,
    postgres_version,
    report,
    run,
    seed_box,
    start_simulator,
)

from broadcaster import procs
from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area
from gateway_simulators.gatewayapi import Arrivals, arrivals, busiest_window, mean_rate


def start_dispatchers(
    started: list[procs.Child], log_dir: Path, env: dict[str, str], names: list[str]
) -> list[procs.Child]:
    """Start dispatcher processes at the same moment (each waits for its own ready line)."""

    def one(name: str) -> procs.Child:
        return procs.start(
            name,
            procs.broadcaster_argv("dispatcher"),
            env=env,
            log_dir=log_dir,
            ready_line="dispatcher started",
        )

    with ThreadPoolExecutor(len(names)) as pool:
        children_started = list(pool.map(one, names))
    started.extend(children_started)
    return children_started


async def queue_alert(url: str, priority: str) -> None:
    conn = await connect(url)
    try:
        alert = NewAlert("bench", ZONE, parse_area(ZONE), priority, None, None)
        await create_alert(conn, alert, None, None)
    finally:
        await conn.close()


def timeline(sim: str) -> Arrivals:
    return arrivals(get_json(f"{sim}/_sim/timeline"))


async def wait_for_recipients(sim: str, n: int, timeout: float) -> Arrivals:
    deadline = time.monotonic() + timeout
    while True:
        seen = timeline(sim)
        if sum(k for _, k in seen) >= n:
            return seen
        if time.monotonic() > deadline:
            raise SystemExit(f"only {sum(k for _, k in seen)} of {n} recipients in {timeout} s")
        await asyncio.sleep(0.2)


def summary(seen: Arrivals, rate: float) -> dict[str, Any]:
    busiest = busiest_window(seen)
    mean = mean_rate(seen)
    return {
        "recipients_at_gateway": sum(n for _, n in seen),
        "busiest_window": busiest,
        "busiest_over_limit_percent": round((busiest - rate) / rate * 100, 2),
        "mean_rate": round(mean, 1),
        "mean_error_percent": round((mean - rate) / rate * 100, 2),
        "seconds": round(seen[-1][0] - seen[0][0], 1),
    }


async def steady(args: argparse.Namespace) -> None:
    url = await fresh_database("broadcaster_bench_rate")
    await seed_box(url, int(args.rate * (args.seconds + 15)))
    with children() as (started, log_dir):
        sim = start_simulator(started, log_dir, "--hold-receipts")
        env = environment(url, gateway_toml(log_dir / "gw.toml", sim, **gateway(args)))
        start_dispatchers(started, log_dir, env, [f"d{i}" for i in range(args.dispatchers)])
        await queue_alert(url, "normal")
        first = (await wait_for_recipients(sim, 1, 30))[0][0]
        await asyncio.sleep(args.seconds + 1.5 - (time.time() - first))
        seen = [(t, n) for t, n in timeline(sim) if t < first + args.seconds]
    figures = {
        "case": "steady",
        "limit": args.rate,
        "dispatchers": args.dispatchers,
        **summary(seen, args.rate),
        "postgres": await postgres_version(url),
    }
    report(
        "rate_limit",
        figures,
        f"steady, {args.dispatchers} dispatchers at a {args.rate:.0f} msg/s limit for "
        f"{args.seconds} s: mean {figures['mean_rate']} msg/s "
        f"({figures['mean_error_percent']:+.2f} %), busiest 1-s window "
        f"{figures['busiest_window']} ({figures['busiest_over_limit_percent']:+.1f} %)",
    )


async def from_the_start(args: argparse.Namespace, churn: bool) -> None:
    url = await fresh_database("broadcaster_bench_rate")
    await seed_box(url, args.recipients)
    with children() as (started, log_dir):
        sim = start_simulator(started, log_dir, "--hold-receipts")
        env = environment(url, gateway_toml(log_dir / "gw.toml", sim, **gateway(args)))
        await queue_alert(url, "emergency")  # queued before any dispatcher runs
        count = 3 if churn else args.dispatchers
        running = start_dispatchers(started, log_dir, env, [f"d{i}" for i in range(count)])
        timeout = args.recipients / args.rate + 60
        if churn:
            await wait_for_recipients(sim, args.recipients // 3, timeout)
            start_dispatchers(started, log_dir, env, ["added"])
            await wait_for_recipients(sim, args.recipients * 2 // 3, timeout)
            running[0].kill()
        seen = await wait_for_recipients(sim, args.recipients, timeout)
        await asyncio.sleep(1.0)  # a killed dispatcher's batch in flight goes again
        seen = timeline(sim)
    figures = {
        "case": "churn" if churn else "start",
        "limit": args.rate,
        "dispatchers": "3 started together, 1 added, 1 killed" if churn else count,
        "max_batch": args.max_batch,
        **summary(seen, args.rate),
        "postgres": await postgres_version(url),
    }
    what = "3 started together, 1 added, 1 killed" if churn else f"{count} started together"
    report(
        f"rate_limit_{figures['case']}",
        figures,
        f"{what}, emergency to {args.recipients:,} at a {args.rate:.0f} msg/s limit: "
        f"busiest 1-s window {figures['busiest_window']} "
        f"({figures['busiest_over_limit_percent']:+.1f} %), mean {figures['mean_rate']} msg/s "
        f"({figures['mean_error_percent']:+.2f} %)",
    )


def gateway(args: argparse.Namespace) -> dict[str, Any]:
    return {"rate": args.rate, "max_batch": args.max_batch}


def environment(url: str, config: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BROADCASTER_CONFIG": str(config),
        "BROADCASTER_LOG_LEVEL": "info",
        "BROADCASTER_POLL_INTERVAL": "0.2",
    }


async def main(args: argparse.Namespace) -> None:
    if args.case in ("steady", "all"):
        await steady(args)
    if args.case in ("start", "all"):
        await from_the_start(args, churn=False)
    if args.case in ("churn", "all"):
        await from_the_start(args, churn=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["steady", "start", "churn", "all"], default="all")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=100)
    parser.add_argument("--recipients", type=int, default=10_000)
    run(main(parser.parse_args()))
