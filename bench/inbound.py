"""Inbound SMS: how fast a STOP wins against a running broadcast, and how many inbound SMS (tips)
one API process takes per second.

(a) STOP. A fresh database with --subscribers subscribers in one box; the GatewayAPI simulator
    (receipts held), `broadcaster api` and `broadcaster dispatcher` as child processes (the
    production layout), the gateway unlimited unless --rate says otherwise. A broadcast to every
    subscriber starts; once the simulator has taken --started messages, --stops STOPs are POSTed
    to /v1/inbound/primary one after another, --interval seconds apart, each a GatewayAPI MO SMS
    signed as GatewayAPI signs it, from numbers at the back of the queue (their deliveries are
    still queued). The figure is the time from the POST to its answer: the API answers once the
    STOP's transaction has committed, and from that commit on no claim can hand a delivery to the
    number to a gateway (the subscriber is opted out, so a claim cancels it; the STOP itself
    cancels the queued ones). It is an upper bound of "STOP to no further claim". Afterwards
    every stopped number's delivery is looked up: cancelled by the STOP, cancelled at a claim,
    or sent (claimed before the STOP committed; with numbers from the back of the queue, none).
(b) Ingestion. A fresh database with --tips subscribers who all got one alert (deliveries 'sent',
    set-based SQL, as bench/receipts.py seeds receipts), one `broadcaster api` with a gatewayapi
    gateway 'primary', and a load generator in its own process (bench/loadgen.py, --concurrency
    keep-alive connections, requests signed and encoded before the clock starts) posting one
    signed MO SMS per subscriber, each a tip linked to that alert. The first 20 x concurrency
    warm up; tips/s is counted over the rest, and every tip is checked in the database (stored,
    linked). Next to it, in the same run: the FastAPI no-op POST ceiling with the same client
    (bench/ceilings.api_ceiling) just before and just after; the mean of the two is the ceiling.

    python bench/inbound.py [--subscribers 500000] [--stops 200] [--interval 0.05] [--rate 0]
                            [--tips 50000] [--concurrency 64] [--api-requests 20000]
                            [--only stop|ingest]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    SECRET,
    ZONE,
    bracketed,
    children,
    cpu_seconds,
    fresh_database,
    gateway_toml,
    get_json,
    postgres_version,
    report,
    run,
    seed_box,
    service_env,
    start_api,
    start_service,
)

from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area

SCRIPT = str(Path(__file__).resolve())
FIRST_MSISDN = 4530000000  # harness.seed_box numbers subscribers +4530000000, +4530000001, ...
OPEN = "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status IN ('queued', 'sending')"
_mo_ids = itertools.count(1)

# Every subscriber got one alert, sent through 'primary' (tips link to it).
SEED_SENT = """
WITH alert AS (
    INSERT INTO alerts (message, area, priority, status, recipients, fanned_out_at)
    VALUES ('bench', '{}'::jsonb, 2, 'dispatching', (SELECT count(*) FROM subscribers), now())
    RETURNING id
)
INSERT INTO deliveries (alert_id, subscriber_id, priority, status, attempts, gateway,
                        gateway_message_id, sent_at)
SELECT alert.id, s.id, 2, 'sent', 1, 'primary', s.id::text, now()
FROM alert, subscribers s
"""


def signed_mo(msisdn: int, message: str) -> tuple[bytes, str]:
    """(body, X-Gwapi-Signature) of a GatewayAPI MO SMS from `msisdn`."""
    import jwt

    payload = {
        "id": next(_mo_ids),
        "msisdn": msisdn,
        "receiver": 4570000000,
        "message": message,
        "senttime": int(time.time()),
        "webhook_label": "bench",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return json.dumps(payload).encode(), jwt.encode(payload, SECRET, algorithm="HS256")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


# ------------------------------------------------------------------------------ (a) STOP


async def stop_latency(
    subscribers: int, stops: int, interval: float, rate: float, started_at: int
) -> dict[str, Any]:
    import aiohttp

    url = await fresh_database("broadcaster_bench_inbound_stop")
    await seed_box(url, subscribers)
    # Numbers at the back of the queue (claimed last): subscriber ids n, n-1, ...
    stopping = [FIRST_MSISDN + subscribers - 1 - i for i in range(stops)]
    requests = [signed_mo(msisdn, "STOP") for msisdn in stopping]
    with children() as (started, log_dir):
        service = start_service(
            started, log_dir, url, rate=rate or 1_000_000, sim_args=["--hold-receipts"]
        )
        api, sim = service.api, service.sim
        conn = await connect(url)
        try:
            alert = NewAlert(
                "Politi: stor udsendelse", ZONE, parse_area(ZONE), "normal", None, None
            )
            alert_id, _ = await create_alert(conn, alert, None, None)
            t_alert = time.time()
            while get_json(f"{sim}/_sim/stats")["recipients"] < started_at:
                assert time.time() - t_alert < 300, "the broadcast did not start"
                await asyncio.sleep(0.05)
            sent_before = get_json(f"{sim}/_sim/stats")["recipients"]
            latencies: list[float] = []
            statuses: list[int] = []
            async with aiohttp.ClientSession() as http:
                for body, token in requests:
                    headers = {"Content-Type": "application/json", "X-Gwapi-Signature": token}
                    t0 = time.perf_counter()
                    async with http.post(
                        f"{api}/v1/inbound/primary", data=body, headers=headers
                    ) as r:
                        await r.read()
                    latencies.append((time.perf_counter() - t0) * 1000)
                    statuses.append(r.status)
                    await asyncio.sleep(interval)
            sent_after = get_json(f"{sim}/_sim/stats")["recipients"]
            while await conn.fetchval(OPEN, alert_id):
                assert time.time() - t_alert < 900, "the broadcast did not finish"
                await asyncio.sleep(0.2)
            seconds = time.time() - t_alert
            outcomes = await conn.fetch(
                """SELECT d.status, d.error, count(*) AS n FROM deliveries d
                   JOIN subscribers s ON s.id = d.subscriber_id
                   WHERE d.alert_id = $1 AND s.phone = ANY($2::text[])
                   GROUP BY d.status, d.error""",
                alert_id,
                [f"+{m}" for m in stopping],
            )
            opted_out = await conn.fetchval(
                "SELECT count(*) FROM subscribers WHERE phone = ANY($1::text[]) "
                "AND status = 'opted_out'",
                [f"+{m}" for m in stopping],
            )
            recipients = await conn.fetchval(
                "SELECT recipients FROM alerts WHERE id = $1", alert_id
            )
        finally:
            await conn.close()
    return {
        "subscribers": subscribers,
        "broadcast_recipients": recipients,
        "stops": stops,
        "interval_s": interval,
        "answered_200": statuses.count(200),
        "opted_out": opted_out,
        "stop_to_committed_ms": {
            "p50": _pct(latencies, 0.5),
            "p99": _pct(latencies, 0.99),
            "max": round(max(latencies), 1),
        },
        "gateway_had_taken_when_stops_began": sent_before,
        "gateway_had_taken_when_stops_ended": sent_after,
        "broadcast_seconds": round(seconds, 1),
        "stopped_numbers_deliveries": {f"{r['status']}: {r['error']}": r["n"] for r in outcomes},
        "postgres": await postgres_version(url),
    }


# ------------------------------------------------------------------------------ (b) ingestion


async def ingestion(tips: int, concurrency: int, api_requests: int) -> dict[str, Any]:
    from ceilings import api_ceiling

    url = await fresh_database("broadcaster_bench_inbound_ingest")
    await seed_box(url, tips)
    conn = await connect(url)
    try:
        await conn.execute(SEED_SENT)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    before = await api_ceiling(api_requests, concurrency, "lean")
    with children() as (started, log_dir):
        config = gateway_toml(log_dir / "gw.toml", "http://127.0.0.1:9", rate=1000)
        api = start_api(started, log_dir, service_env(url, config))
        api_pid = started[-1].pid
        cpu0 = cpu_seconds(api_pid) or 0.0
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--load-generator",
            "--target",
            f"{api}/v1/inbound/primary",
            "--tips",
            str(tips),
            "--concurrency",
            str(concurrency),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError("the load generator failed")
        load = json.loads(out.decode().strip().splitlines()[-1])
        api_cpu = (cpu_seconds(api_pid) or 0.0) - cpu0
    after = await api_ceiling(api_requests, concurrency, "lean")
    ceiling = bracketed(before, after, "req_per_s")
    conn = await connect(url)
    try:
        linked = await conn.fetchval(
            "SELECT count(*) FROM inbound_messages WHERE kind = 'tip' AND alert_id IS NOT NULL"
        )
    finally:
        await conn.close()
    if linked != tips:
        raise RuntimeError(f"only {linked} of {tips} tips were stored and linked")
    rate = load["timed"] / load["seconds"]
    return {
        "tips": tips,
        "concurrency": concurrency,
        "warmup_tips": load["warmup"],
        "answered_2xx": load["ok"],
        "answered_other": load["failed"],
        "linked_in_db": linked,
        "tips_per_s": round(rate, 1),
        "latency_ms": load["latency_ms"],
        "api_cpu_us_per_tip": round(1e6 * api_cpu / tips, 1),
        "api_noop_ceiling": ceiling,
        "share_of_ceiling": round(rate / ceiling["req_per_s"], 3),
        "postgres": await postgres_version(url),
    }


async def _load_generator(target: str, tips: int, concurrency: int) -> None:
    from loadgen import LoadGenerator, encode_post

    requests = []
    for i in range(tips):
        body, token = signed_mo(FIRST_MSISDN + i, f"Jeg så en hvid varevogn ved stationen ({i})")
        headers = [("Content-Type", "application/json"), ("X-Gwapi-Signature", token)]
        requests.append(encode_post(target, body, headers))
    warm = min(tips, concurrency * 20)
    async with LoadGenerator(target, concurrency) as generator:
        _, ok0, failed0, _ = await generator.run(requests[:warm])
        seconds, ok, failed, latencies = await generator.run(requests[warm:])
    latencies.sort()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "warmup": warm,
                "timed": tips - warm,
                "ok": ok + ok0,
                "failed": failed + failed0,
                "latency_ms": {
                    "p50": _pct([x * 1000 for x in latencies], 0.5),
                    "p99": _pct([x * 1000 for x in latencies], 0.99),
                },
            }
        )
    )


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    figures: dict[str, Any] = {}
    parts = []
    if args.only in (None, "stop"):
        stop = await stop_latency(
            args.subscribers, args.stops, args.interval, args.rate, args.started
        )
        figures["stop"] = stop
        latency = stop["stop_to_committed_ms"]
        parts.append(
            f"STOP during a {stop['broadcast_recipients']:,} broadcast: answered (committed) p50 "
            f"{latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms over "
            f"{args.stops} STOPs; their deliveries {stop['stopped_numbers_deliveries']}"
        )
    if args.only in (None, "ingest"):
        ingest = await ingestion(args.tips, args.concurrency, args.api_requests)
        figures["ingest"] = ingest
        parts.append(
            f"tips into 1 API process: {ingest['tips_per_s']:,.0f}/s, FastAPI no-op ceiling "
            f"{ingest['api_noop_ceiling']['req_per_s']:,.0f} req/s "
            f"(ratio {ingest['share_of_ceiling']})"
        )
    report("inbound", figures, "; ".join(parts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500_000)
    parser.add_argument("--stops", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between STOPs")
    parser.add_argument("--rate", type=float, default=0, help="gateway limit (0: none)")
    parser.add_argument(
        "--started", type=int, default=20_000, help="messages sent before the STOPs begin"
    )
    parser.add_argument("--tips", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--api-requests", type=int, default=20_000, help="no-op ceiling POSTs")
    parser.add_argument("--only", choices=["stop", "ingest"])
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        import uvloop

        uvloop.run(_load_generator(args.target, args.tips, args.concurrency))
    else:
        run(main(args))
