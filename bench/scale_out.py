"""Scaled out as in production, at full size: two API processes and three dispatchers over one
database, a 500,000-recipient broadcast, one dispatcher added and one SIGKILLed while it runs,
and the API under a steady load of alert creations and reads meanwhile.

A fresh database seeded as bench/fanout.py seeds it (--total subscribers, half of them inside the
zone, ids shuffled); the GatewayAPI simulator with a realistic answer latency (--latency-ms)
posting receipts --receipt-delay-ms after each submit to the first API (as the dispatchers'
BROADCASTER_PUBLIC_URL names it); the alert goes in through the second API. When the simulator
has accepted --add-at of the recipients a fourth dispatcher starts (a scale-up), at --kill-at
one of the first three is killed with SIGKILL (a node lost, no chance to release its rows).

From before the POST until the broadcast is final, an open-loop load runs against both APIs
in turn: --creates-per-s small emergency alerts (a 50 m circle: a handful of recipients) and
--reads-per-s reads (GET /v1/alerts/{id} of the big alert, GET /v1/alerts), each request
started on its schedule whether or not the one before has answered; p50/p99 per kind.

At the end, for the big alert only (the simulator's userref), counted at the simulator per
recipient: expected (everyone inside the zone) vs accepted, missed (must be 0), doubled (must
be within the documented bound: the killed dispatcher's batches in flight, `concurrency`, times
`max_batch`), and the wall time from the POST to the last submit, to alerts.completed_at and
(with --wait-receipts) to every delivery final; without it the run ends at the last submit and
reports how many receipts were in by then. Exit status 1 when anyone was missed or the
doubles exceed the bound.

    python bench/scale_out.py [--total 1000000] [--rate 0] [--latency-ms 80]
                              [--receipt-delay-ms 200 | --hold-receipts] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import positions, seed_half_inside
from harness import (
    ZONE,
    children,
    fresh_database,
    gateway_toml,
    postgres_version,
    report,
    run,
    start_simulator,
)

from broadcaster import procs
from broadcaster.auth import create_api_key
from broadcaster.database import connect

MAX_BATCH = 500
CONCURRENCY = 4
FINAL = ("delivered", "failed", "expired", "cancelled")
SMALL = {"type": "Circle", "center": [12.30, 55.92], "radius_m": 50}
MESSAGE = "Politiet: stor udsendelse. Se noget? Ring 114."


@dataclass
class Load:
    """Latencies in ms per request kind, and the answers that were not 2xx."""

    ms: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # status code or exception name
    by_api: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, api: str, ms: float, answer: str) -> None:
        self.ms.setdefault(kind, []).append(ms)
        self.by_api.setdefault(api, []).append(ms)
        self.answers[answer] += 1
        if not answer.startswith("2"):
            self.errors[kind] += 1


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _sim_get(sim: str, path: str) -> Any:
    with urllib.request.urlopen(f"{sim}{path}", timeout=120) as r:
        return json.loads(r.read())


async def _one(
    http: aiohttp.ClientSession, load: Load, kind: str, api: str, method: str, path: str, body: Any
) -> None:
    t0 = time.perf_counter()
    try:
        async with http.request(method, f"{api}{path}", json=body) as r:
            await r.read()
            answer = str(r.status)
    except (TimeoutError, aiohttp.ClientError) as exc:
        answer = type(exc).__name__
    load.add(kind, api, (time.perf_counter() - t0) * 1000, answer)


async def api_load(
    http: aiohttp.ClientSession,
    apis: list[str],
    big: asyncio.Future[int],
    creates_per_s: float,
    reads_per_s: float,
    stop: asyncio.Event,
    load: Load,
) -> None:
    """Open-loop requests on a fixed schedule until `stop`: creations and reads interleaved,
    alternating between the APIs; reads of the big alert once it exists."""
    schedule: list[tuple[float, str]] = []
    horizon = 3600.0
    if creates_per_s > 0:
        schedule += [(i / creates_per_s, "create") for i in range(int(horizon * creates_per_s))]
    if reads_per_s > 0:
        schedule += [(i / reads_per_s, "read") for i in range(int(horizon * reads_per_s))]
    schedule.sort()
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for n, (at, kind) in enumerate(schedule):
        if stop.is_set():
            break
        delay = start + at - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        api = apis[n % len(apis)]
        if kind == "create":
            body = {"message": f"Politi: akut {n}", "area": SMALL, "priority": "emergency"}
            coro = _one(http, load, "create", api, "POST", "/v1/alerts", body)
        elif big.done() and n % 2:
            path = f"/v1/alerts/{big.result()}"
            coro = _one(http, load, "read_alert", api, "GET", path, None)
        else:
            coro = _one(http, load, "read_list", api, "GET", "/v1/alerts?limit=20", None)
        task = asyncio.create_task(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def _sent(sim: str) -> int:
    return int((await asyncio.to_thread(_sim_get, sim, "/_sim/stats"))["recipients"])


async def wait_final(conn: Any, alert_id: int, receipts: bool, timeout: float) -> dict[str, Any]:
    """Poll until the alert is completed and (with receipts) every delivery is final."""
    deadline = time.monotonic() + timeout
    while True:
        row = await conn.fetchrow(
            "SELECT status, recipients, created_at, completed_at FROM alerts WHERE id = $1",
            alert_id,
        )
        if row["completed_at"] is not None:
            if not receipts:
                return dict(row)
            final = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status = ANY($2)",
                alert_id,
                list(FINAL),
            )
            if final >= row["recipients"]:
                return {**row, "all_final_at": time.time()}
        if time.monotonic() > deadline:
            raise RuntimeError(f"alert {alert_id} not final within {timeout:.0f} s: {dict(row)}")
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> int:
    inside = args.total // 2
    url = await fresh_database("broadcaster_bench_scale_out")
    t0 = time.perf_counter()
    await seed_half_inside(url, args.total, inside)
    seed_seconds = time.perf_counter() - t0
    _, _, is_inside = positions(args.total, inside, 1)  # the same draw as the seeding
    expected = {int(f"453{i:07d}") for i in is_inside.nonzero()[0]}
    conn = await connect(url)
    try:
        key = await create_api_key(conn, "bench")
    finally:
        await conn.close()

    with children() as (started, log_dir):
        receipt_args = (
            ["--hold-receipts"]
            if args.hold_receipts
            else ["--receipt-delay-ms", f"{args.receipt_delay_ms:g}"]
        )
        sim = start_simulator(
            started, log_dir, "--latency-ms", f"{args.latency_ms:g}", *receipt_args
        )
        config = gateway_toml(
            log_dir / "gw.toml",
            sim,
            rate=args.rate or 10_000_000,
            max_batch=args.max_batch,
            concurrency=args.concurrency,
        )
        ports = [procs.free_port(), procs.free_port()]
        apis = [f"http://127.0.0.1:{p}" for p in ports]
        env = {
            "DATABASE_URL": url,
            "BROADCASTER_CONFIG": str(config),
            "BROADCASTER_PUBLIC_URL": apis[0],  # receipts go to the first API
            "BROADCASTER_LOG_LEVEL": "warning",
            "BROADCASTER_POLL_INTERVAL": "0.2",
        }
        for n, (port, api) in enumerate(zip(ports, apis, strict=True)):
            started.append(
                procs.start(
                    f"api-{n}",
                    procs.broadcaster_argv("api"),
                    env={**env, "BROADCASTER_PORT": str(port)},
                    log_dir=log_dir,
                    ready_url=f"{api}/readyz",
                )
            )

        def dispatcher(name: str) -> procs.Child:
            child = procs.start(
                name,
                procs.broadcaster_argv("dispatcher"),
                env={**env, "BROADCASTER_LOG_LEVEL": "info"},
                log_dir=log_dir,
                ready_line="dispatcher started",
            )
            started.append(child)
            return child

        dispatchers = [dispatcher(f"dispatcher-{n}") for n in range(3)]

        headers = {"Authorization": f"Bearer {key}"}
        load = Load()
        stop = asyncio.Event()
        big: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(
            headers=headers, timeout=timeout, connector=connector
        ) as http:
            loader = asyncio.create_task(
                api_load(http, apis, big, args.creates_per_s, args.reads_per_s, stop, load)
            )
            await asyncio.sleep(2)  # the load is steady before the broadcast starts
            posted = time.time()
            async with http.post(
                f"{apis[1]}/v1/alerts",
                json={"message": MESSAGE, "area": ZONE, "priority": "normal"},
            ) as r:
                if r.status != 202:
                    raise RuntimeError(f"POST /v1/alerts answered {r.status}: {await r.text()}")
                alert_id = int((await r.json())["id"])
            big.set_result(alert_id)

            while await _sent(sim) < args.add_at * inside:
                await asyncio.sleep(0.1)
            added_at = time.time()
            dispatcher("dispatcher-3")  # a pod added by a scale-up
            while await _sent(sim) < args.kill_at * inside:
                await asyncio.sleep(0.1)
            killed_at = time.time()
            dispatchers[1].kill()  # a node lost: no chance to release its rows
            sent_at_kill = await _sent(sim)
            print(
                f"# dispatcher added at {added_at - posted:.1f} s, one killed at "
                f"{killed_at - posted:.1f} s ({sent_at_kill:,} sent)",
                flush=True,
            )

            conn = await connect(url)
            try:
                done = await wait_final(conn, alert_id, args.wait_receipts, args.timeout)
                await asyncio.sleep(1)  # the load's last second after the end
                stop.set()
                await loader
                counts = await conn.fetch(
                    "SELECT status, count(*) AS n FROM deliveries WHERE alert_id = $1 "
                    "GROUP BY status",
                    alert_id,
                )
                small_alerts = await conn.fetchval(
                    "SELECT count(*) FROM alerts WHERE id <> $1", alert_id
                )
            finally:
                await conn.close()
        timeline = await asyncio.to_thread(_sim_get, sim, "/_sim/timeline")
        messages = await asyncio.to_thread(_sim_get, sim, "/_sim/messages")

    userref = str(alert_id)
    received = Counter(m["msisdn"] for m in messages if m["userref"] == userref)
    last_submit = max(t for t, _, u in timeline if u == userref)
    missed = len(expected - set(received))
    outside = len(set(received) - expected)
    doubled = sum(n - 1 for n in received.values())
    bound = args.concurrency * args.max_batch
    completed = done["completed_at"].timestamp()
    figures: dict[str, Any] = {
        "subscribers": args.total,
        "recipients_expected": len(expected),
        "recipients_accepted": len(received),
        "submissions_accepted": sum(received.values()),
        "missed": missed,
        "outside_zone": outside,
        "doubled": doubled,
        "doubled_bound": bound,
        "apis": 2,
        "dispatchers": f"3, +1 at {args.add_at:.0%}, 1 SIGKILLed at {args.kill_at:.0%}",
        "sent_when_killed": sent_at_kill,
        "added_after_s": round(added_at - posted, 1),
        "killed_after_s": round(killed_at - posted, 1),
        "post_to_last_submit_s": round(last_submit - posted, 1),
        "post_to_completed_s": round(completed - posted, 1),
        "post_to_all_final_s": (
            round(done["all_final_at"] - posted, 1) if "all_final_at" in done else None
        ),
        "deliveries": {r["status"]: r["n"] for r in counts},
        "gateway": {
            "rate_per_second": args.rate or None,
            "max_batch": args.max_batch,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "receipts": "held" if args.hold_receipts else f"{args.receipt_delay_ms:g} ms",
        },
        "api_load": {
            "creates_per_s": args.creates_per_s,
            "reads_per_s": args.reads_per_s,
            "small_alerts_created": small_alerts,
            **{
                kind: {
                    "requests": len(ms),
                    "p50_ms": _pct(ms, 0.5),
                    "p99_ms": _pct(ms, 0.99),
                    "max_ms": round(max(ms), 1),
                    "mean_ms": round(statistics.fmean(ms), 1),
                    "not_2xx": load.errors[kind],
                }
                for kind, ms in sorted(load.ms.items())
            },
            "answers": dict(load.answers),
            "by_api": {
                ("receipts' api" if api == apis[0] else "other api"): {
                    "p50_ms": _pct(ms, 0.5),
                    "p99_ms": _pct(ms, 0.99),
                }
                for api, ms in load.by_api.items()
            },
        },
        "seed_seconds": round(seed_seconds, 1),
        "postgres": await postgres_version(url),
    }
    ok = missed == 0 and outside == 0 and doubled <= bound
    kinds = figures["api_load"]
    report(
        "scale_out",
        figures,
        f"{len(expected):,} of {args.total:,} in the zone, 2 APIs, 3 dispatchers (+1, one "
        f"SIGKILLed after {sent_at_kill:,} sent): accepted {len(received):,}, missed {missed}, "
        f"doubled {doubled} (bound {bound}); POST → last submit "
        f"{figures['post_to_last_submit_s']} s, → completed {figures['post_to_completed_s']} s"
        + (
            f", → every receipt {figures['post_to_all_final_s']} s"
            if figures["post_to_all_final_s"] is not None
            else ""
        )
        + "; API meanwhile: "
        + ", ".join(
            f"{k} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms ({v['requests']}, "
            f"{v['not_2xx']} not 2xx)"
            for k, v in kinds.items()
            if isinstance(v, dict) and "requests" in v
        )
        + ("" if ok else " — FAILED"),
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1_000_000, help="subscribers (half inside)")
    parser.add_argument("--rate", type=float, default=0, help="gateway limit (0: none)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--latency-ms", type=float, default=80, help="simulator's answer time")
    parser.add_argument("--receipt-delay-ms", type=float, default=200)
    parser.add_argument("--hold-receipts", action="store_true", help="no receipts posted")
    parser.add_argument(
        "--wait-receipts",
        action="store_true",
        help="end when every receipt is in, not at the last submit",
    )
    parser.add_argument("--creates-per-s", type=float, default=2)
    parser.add_argument("--reads-per-s", type=float, default=20)
    parser.add_argument("--add-at", type=float, default=0.2, help="share sent: add a dispatcher")
    parser.add_argument("--kill-at", type=float, default=0.4, help="share sent: kill one")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the broadcast")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    if args.quick:  # the account's limit makes the small broadcast last long enough for a kill
        args.total, args.rate = 40_000, args.rate or 4000
    outcome: list[int] = []

    async def _main() -> None:
        outcome.append(await main(args))

    run(_main())
    sys.exit(outcome[0] if outcome else 1)
