"""End-to-end dispatch throughput per protocol: SMS/s from the first submit until every delivery
is 'sent', against the machine's own ceiling measured in the same run.

For each protocol: a fresh database with --recipients subscribers inside the zone, that
protocol's simulator (receipts held, so they cost no CPU), one `broadcaster dispatcher` with a
rate limit far above what the machine can do, and one normal alert over the whole zone inserted
directly with `broadcaster.ingest.alerts.create_alert`. The clock starts at the simulator's first
accepted message and stops at the alert's completed_at (nothing left to submit); the sustained
rate is the one between 10 % and 90 % of the sends. Ceilings: claim+complete (one process with
as many loops as the dispatcher's concurrency) for GatewayAPI, the per-message HTTP ceiling at
the same concurrency for Twilio. Each ceiling runs just before the broadcast (on the seeded
database, whose deliveries are emptied again) and just after it; the ratio is to the mean of
the two, and both are reported: on a shared machine the speed moves within minutes.

    python bench/dispatch.py [--protocol gatewayapi|twilio|smpp|all] [--recipients N]
                             [--max-batch N] [--concurrency N] [--dispatchers N]
                             [--no-ceiling]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceilings import claim_complete_ceiling, http_ceiling
from harness import (
    SECRET,
    TOKEN,
    ZONE,
    backend_cpu,
    bracketed,
    children,
    cpu_seconds,
    fresh_database,
    get_json,
    postgres_version,
    report,
    run,
    seed_box,
    start_dispatcher,
    start_simulator,
)

from broadcaster import procs
from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import parse_area

# submit_sm in flight for SMPP: an SMSC account's window is the operator's setting; 100 is a
# common upper value (the adapter's default is 10, which bounds a localhost run at ~4k SMS/s).
SMPP_WINDOW = 100
RATE = 10_000_000  # far above anything the machine does: the limiter never waits
TWILIO_TOKEN = "ACbench0000:bench-auth-token"
SMPP_SYSTEM_ID, SMPP_PASSWORD = "bench", "benchpw"  # SMPP passwords are at most 8 characters
DEFAULTS: dict[str, dict[str, int]] = {
    # The gateway's default of 4 batches in flight (GatewayConfig.concurrency). With 2 the
    # stages of a batch (claim, encode, the simulator, decode, write-back) barely overlap and
    # the machine is a third idle (500,000 with batch 1000 on 2026-11-24: 48.4k SMS/s at 2,
    # 60.2k at 4); on a slower machine 4 lost to lock and WAL contention (31.4k vs 28.6k).
    "gatewayapi": {"recipients": 500_000, "max_batch": 1000, "concurrency": 4},
    # Twilio at the gateway's default batch (GatewayConfig.max_batch 1000); with 100 the claims
    # and write-backs per message were ten times as many (2026-11-24: ratio 0.40 at 100, 0.47
    # at 500, 0.49 at 1000).
    "twilio": {"recipients": 100_000, "max_batch": 1000, "concurrency": 64},
    "smpp": {"recipients": 200_000, "max_batch": 1000, "concurrency": 4},
}
QUICK_RECIPIENTS = {"gatewayapi": 20_000, "twilio": 3_000, "smpp": 5_000}


def _dispatchers_cpu(pool: list[procs.Child]) -> float | None:
    seconds = [cpu_seconds(p.pid) for p in pool]
    return None if None in seconds else sum(s for s in seconds if s is not None)


def _start_gateway(
    protocol: str, started: list[procs.Child], log_dir: Path
) -> tuple[str, str, str, str]:
    """Start the protocol's simulator; (base_url for the config, token, stats URL, stats key)."""
    if protocol == "gatewayapi":
        sim = start_simulator(started, log_dir, "--hold-receipts")
        return sim, TOKEN, f"{sim}/_sim/stats", "recipients"
    port = procs.free_port()
    if protocol == "twilio":
        args = ["--protocol", "twilio", "--port", str(port), "--token", TWILIO_TOKEN]
        base = stats = f"http://127.0.0.1:{port}"
        token, key = TWILIO_TOKEN, "recipients"
    else:
        http_port = procs.free_port()
        args = ["--protocol", "smpp", "--port", str(port), "--http-port", str(http_port)]
        args += ["--system-id", SMPP_SYSTEM_ID, "--password", SMPP_PASSWORD]
        base, stats = f"smpp://127.0.0.1:{port}", f"http://127.0.0.1:{http_port}"
        token, key = f"{SMPP_SYSTEM_ID}:{SMPP_PASSWORD}", "accepted"
    started.append(
        procs.start(
            "simulator",
            procs.broadcaster_argv("simulate-gateway", *args, "--hold-receipts"),
            env={},
            log_dir=log_dir,
            ready_line="listening on",
        )
    )
    return base, token, f"{stats}/_sim/stats", key


def _config(
    path: Path, protocol: str, base_url: str, token: str, max_batch: int, concurrency: int
) -> Path:
    path.write_text(
        f'[[gateways]]\nname = "primary"\ntype = "{protocol}"\nbase_url = "{base_url}"\n'
        f'token = "{token}"\nwebhook_secret = "{SECRET}"\nrate_per_second = {RATE}\n'
        f'max_batch = {max_batch}\nconcurrency = {concurrency}\nsender = "POLITI"\n'
        + (f"window = {SMPP_WINDOW}\n" if protocol == "smpp" else "")
    )
    return path


async def dispatch_once(
    protocol: str,
    recipients: int,
    max_batch: int,
    concurrency: int,
    timeout: float,
    dispatchers: int = 1,
    before: Callable[[str], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """One broadcast of `recipients` through `protocol`; the figures of that run, with the
    result of `before(url)` (run on the seeded database just before the broadcast) under
    "before"."""
    url = await fresh_database(f"broadcaster_bench_dispatch_{protocol}")
    await seed_box(url, recipients)
    ahead = await before(url) if before is not None else None
    with children() as (started, log_dir):
        base_url, token, stats_url, stats_key = _start_gateway(protocol, started, log_dir)
        config = _config(log_dir / "gw.toml", protocol, base_url, token, max_batch, concurrency)
        pool = [
            start_dispatcher(log_dir, url, config, f"dispatcher-{i}") for i in range(dispatchers)
        ]
        started.extend(pool)
        simulator = started[0]
        conn = await connect(url)
        try:
            created = time.time()
            alert_id, _ = await create_alert(
                conn, NewAlert("bench", ZONE, parse_area(ZONE), "normal", None, None), None, None
            )
            deadline = created + timeout
            first = None
            while first is None and time.time() < deadline:
                if get_json(stats_url)[stats_key] > 0:
                    first = time.time()
                else:
                    await asyncio.sleep(0.01)
            cpu0 = (
                _dispatchers_cpu(pool),
                cpu_seconds(simulator.pid),
                await backend_cpu(conn),
            )
            status = None
            while time.time() < deadline:
                status = await conn.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id)
                if status != "dispatching" and status != "queued":
                    break
                await asyncio.sleep(0.05)
            wall = time.time()
            cpu1 = (
                _dispatchers_cpu(pool),
                cpu_seconds(simulator.pid),
                await backend_cpu(conn),
            )
            accepted = get_json(stats_url)[stats_key]
            if protocol == "gatewayapi" and first is not None:
                timeline = get_json(stats_url.replace("/stats", "/timeline"))
                first = float(timeline[0][0]) if timeline else first
            row = await conn.fetchrow(
                """
                SELECT a.recipients, extract(epoch FROM a.fanned_out_at) AS fanout_started,
                       extract(epoch FROM a.completed_at) AS completed,
                       extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY d.sent_at))
                         AS p10,
                       extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY d.sent_at))
                         AS p90,
                       count(*) FILTER (WHERE d.status = 'sent') AS sent,
                       count(*) FILTER (WHERE d.status = 'failed') AS failed
                FROM alerts a JOIN deliveries d ON d.alert_id = a.id
                WHERE a.id = $1
                GROUP BY a.id
                """,
                alert_id,
            )
        finally:
            await conn.close()
    done = status == "completed" and row is not None and row["sent"] == recipients
    end = float(row["completed"]) if row and row["completed"] else wall
    seconds = end - first if first is not None else None
    sent = int(row["sent"]) if row else 0
    p10, p90 = (float(row["p10"]), float(row["p90"])) if row and row["p10"] else (0.0, 0.0)
    backend = sum(s - cpu0[2].get(pid, 0.0) for pid, s in cpu1[2].items())

    def busy(a: float | None, b: float | None) -> float | None:
        """Cores kept busy between the first submit and the end."""
        if a is None or b is None or not seconds:
            return None
        return round((b - a) / seconds, 2)

    return {
        "protocol": protocol,
        "recipients": recipients,
        "max_batch": max_batch,
        "concurrency": concurrency,
        "dispatchers": dispatchers,
        "completed": done,
        "alert_status": status,
        "sent": sent,
        "failed": int(row["failed"]) if row else 0,
        "simulator_accepted": accepted,
        "seconds_first_submit_to_all_sent": round(seconds, 3) if seconds else None,
        "seconds_alert_to_first_submit": round(first - created, 3) if first else None,
        "sms_per_s": round(sent / seconds, 1) if seconds and seconds > 0 else None,
        "sms_per_s_sustained_p10_p90": (
            round(0.8 * sent / (p90 - p10), 1) if p90 - p10 >= 0.5 else None
        ),
        "cpu_cores_busy": {
            "dispatcher": busy(cpu0[0], cpu1[0]),
            "simulator": busy(cpu0[1], cpu1[1]),
            "postgres_backends": busy(0.0, backend),
        },
        "url": url,
        "before": ahead,
    }


async def ceiling(
    url: str, *, protocol: str, recipients: int, args: argparse.Namespace
) -> dict[str, Any] | None:
    """The protocol's ceiling (msg/s and its parameters), or None when it has none."""
    d = DEFAULTS[protocol]
    if protocol == "gatewayapi":
        tasks = args.concurrency or d["concurrency"]
        rate = await claim_complete_ceiling(
            url, recipients, args.dispatchers, batch=args.max_batch or d["max_batch"], tasks=tasks
        )
        conn = await connect(url)
        try:  # leave the database as seeded: the ceiling's alert done, its deliveries gone
            await conn.execute(
                "UPDATE alerts SET status = 'completed', completed_at = now() "
                "WHERE status = 'dispatching'"
            )
            await conn.execute("TRUNCATE deliveries")
        finally:
            await conn.close()
        return {
            "kind": "claim+complete",
            "workers": args.dispatchers,
            "tasks": tasks,
            "msg_per_s": rate,
        }
    if protocol == "twilio":
        http = await http_ceiling(min(recipients, 50_000), args.concurrency or d["concurrency"], 1)
        return {"kind": "http per message", **http}
    return None


async def main(args: argparse.Namespace) -> None:
    protocols = list(DEFAULTS) if args.protocol == "all" else [args.protocol]
    for protocol in protocols:
        d = DEFAULTS[protocol]
        recipients = args.recipients or (QUICK_RECIPIENTS[protocol] if args.quick else 0)
        recipients = recipients or d["recipients"]
        measure = functools.partial(ceiling, protocol=protocol, recipients=recipients, args=args)
        figures = await dispatch_once(
            protocol,
            recipients,
            args.max_batch or d["max_batch"],
            args.concurrency or d["concurrency"],
            args.timeout,
            args.dispatchers,
            before=None if args.no_ceiling else measure,
        )
        url, before = figures.pop("url"), figures.pop("before")
        rate = figures["sms_per_s"]
        ceiling_text = ""
        if before is not None:
            after = await measure(url)
            assert after is not None
            rates = ("msg_per_s", "req_per_s") if "req_per_s" in after else ("msg_per_s",)
            figures["ceiling"] = found = bracketed(before, after, *rates)
            mean = found["msg_per_s"]
            figures["ratio_to_ceiling"] = round(rate / mean, 3) if rate else None
            what = "claim+complete" if protocol == "gatewayapi" else "per-message HTTP"
            ceiling_text = (
                f"; {what} ceiling {mean:,.0f} msg/s "
                f"(before {before['msg_per_s']:,.0f}, after {after['msg_per_s']:,.0f})"
            )
        if figures.get("ratio_to_ceiling") is not None:
            ceiling_text += f" (ratio {figures['ratio_to_ceiling']:.2f})"
        figures["postgres"] = await postgres_version(url)
        state = "" if figures["completed"] else f" — NOT COMPLETE ({figures['alert_status']})"
        report(
            "dispatch",
            figures,
            f"{protocol}: {figures['sent']:,} SMS in "
            f"{figures['seconds_first_submit_to_all_sent'] or float('nan'):.2f} s = "
            f"{rate or 0:,.0f} SMS/s (sustained "
            f"{figures['sms_per_s_sustained_p10_p90'] or float('nan'):,.0f}; batch "
            f"{figures['max_batch']}, concurrency {figures['concurrency']}, "
            f"{args.dispatchers} dispatcher process(es))"
            f"{ceiling_text}{state}",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=[*DEFAULTS, "all"], default="all")
    parser.add_argument(
        "--recipients",
        type=int,
        default=0,
        help="default: 500,000 gatewayapi, 100,000 twilio, 200,000 smpp",
    )
    parser.add_argument("--max-batch", type=int, default=0, help="default: 1000 (every protocol)")
    parser.add_argument("--concurrency", type=int, default=0, help="default: 4 / 64 / 4")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per protocol")
    parser.add_argument(
        "--dispatchers", type=int, default=1, help="dispatcher processes (and ceiling workers)"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling runs")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    run(main(parser.parse_args()))
