"""`broadcaster demo`: the main job end to end, for real.

A fresh database on the configured server (embedded by default), 34,000 synthetic subscribers
over North Zealand, the gateway simulator and the service as child processes on free ports, one
alert for everyone within 18 km of Hillerød, a progress bar until every delivery is final, and a
summary. Everything started is stopped again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broadcaster import procs
from broadcaster.auth import create_api_key
from broadcaster.database import connect, resolve_url
from broadcaster.migrate import apply_migrations
from broadcaster.seed import HILLEROD, insert_subscribers, synthetic_subscribers
from broadcaster.settings import Settings

DEMO_DB = "broadcaster_demo"
RADIUS_M = 18_000
FINAL = ("delivered", "failed", "expired", "cancelled")
TIMEOUT_SECONDS = 300


def run_demo(settings: Settings, *, subscribers: int, rate: float) -> int:
    return asyncio.run(_demo(settings, subscribers, rate))


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _demo(settings: Settings, n: int, rate: float) -> int:
    console = Console()
    wall = time.perf_counter()
    server = resolve_url(settings.database_url, settings.data_dir)
    url = _with_database(server, DEMO_DB)
    console.print(f"[bold]broadcaster demo[/]: {n:,} subscribers, gateway limit {rate:,.0f} msg/s")

    with console.status("preparing the database"):
        admin = await connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{DEMO_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{DEMO_DB}"')
        finally:
            await admin.close()
        conn = await connect(url)
        try:
            await apply_migrations(conn)
            started = time.perf_counter()
            subs, locs = synthetic_subscribers(n)
            await insert_subscribers(conn, subs, locs)
            seeded = time.perf_counter() - started
            key = await create_api_key(conn, "demo")
        finally:
            await conn.close()
    console.print(
        f"seeded {len(subs):,} subscribers with {len(locs):,} locations in {seeded:.1f} s"
    )

    run_dir = settings.data_dir.resolve() / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    sim_port, api_port = procs.free_port(), procs.free_port()
    config = run_dir / "gateways.toml"
    config.write_text(
        "[[gateways]]\n"
        'name = "primary"\n'
        'type = "gatewayapi"\n'
        f'base_url = "http://127.0.0.1:{sim_port}"\n'
        'token = "demo-token"\n'
        'webhook_secret = "demo-webhook-secret-0123456789abcdef"\n'
        f"rate_per_second = {rate}\n"
        "max_batch = 1000\n"
    )
    children: list[procs.Child] = []
    try:
        children.append(
            procs.start(
                "simulator",
                procs.broadcaster_argv(
                    "simulate-gateway",
                    "--port",
                    str(sim_port),
                    "--token",
                    "demo-token",
                    "--webhook-secret",
                    "demo-webhook-secret-0123456789abcdef",
                    "--latency-ms",
                    "20",
                    "--delivered-ratio",
                    "0.97",
                    "--receipt-delay-ms",
                    "500",
                    "--seed",
                    "7",
                ),
                env={},
                log_dir=run_dir,
                ready_line="listening on",
            )
        )
        base = f"http://127.0.0.1:{api_port}"
        children.append(
            procs.start(
                "service",
                procs.broadcaster_argv("serve"),
                env={
                    "DATABASE_URL": url,
                    "BROADCASTER_CONFIG": str(config),
                    "BROADCASTER_PORT": str(api_port),
                    "BROADCASTER_PUBLIC_URL": base,
                    "BROADCASTER_LOG_LEVEL": "warning",
                    # Its log is for people reading the demo's run directory.
                    "BROADCASTER_LOG_FORMAT": "text",
                    # A demo broadcasts when it is run, night or day: no quiet hours.
                    "BROADCASTER_QUIET_HOURS_START": "00:00",
                    "BROADCASTER_QUIET_HOURS_END": "00:00",
                },
                log_dir=run_dir,
                ready_url=f"{base}/readyz",
            )
        )
        console.print(
            f"gateway simulator on :{sim_port}, service on :{api_port} (logs in {run_dir})"
        )
        summary = await _broadcast(console, base, key)
    finally:
        for child in reversed(children):
            child.stop()
    summary["wall time, whole demo (s)"] = round(time.perf_counter() - wall, 1)
    table = Table(title="summary", show_header=False)
    for k, v in summary.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)
    return 0 if summary["missing"] == 0 else 1


async def _broadcast(console: Console, base: str, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    alert = {
        "message": "Politiet: Indbrudsbølge i Hillerød-området. Se noget mistænkeligt? "
        "Ring 114 eller svar på denne SMS.",
        "area": {"type": "Circle", "center": list(HILLEROD), "radius_m": RADIUS_M},
        "priority": "high",
        "expires_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        "reference": "demo-hillerod",
    }
    async with aiohttp.ClientSession(headers=headers) as http:
        posted = time.perf_counter()
        async with http.post(
            f"{base}/v1/alerts", json=alert, headers={"Idempotency-Key": "demo-1"}
        ) as r:
            body = await r.json()
            if r.status != 202:
                raise RuntimeError(f"alert refused: {r.status} {json.dumps(body)}")
        accepted_ms = (time.perf_counter() - posted) * 1000
        alert_id = body["id"]
        console.print(
            f"alert {alert_id} accepted in {accepted_ms:.0f} ms "
            f"(everyone within {RADIUS_M / 1000:.0f} km of Hillerød)"
        )
        status = body
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sent {task.fields[sent]:,}"),
            TimeElapsedColumn(),
        )
        first_final = None
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("final", total=None, sent=0)
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                async with http.get(f"{base}/v1/alerts/{alert_id}") as r:
                    status = await r.json()
                counts = status["deliveries"]
                done = sum(counts[s] for s in FINAL)
                submitted = done + counts["sent"]
                total = status["recipients"]
                progress.update(task, total=total, completed=done, sent=submitted)
                if total is not None and first_final is None and submitted >= total:
                    first_final = time.perf_counter() - posted
                if total is not None and done >= total:
                    break
                await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - posted
    counts = status["deliveries"]
    total = status["recipients"] or 0
    done = sum(counts[s] for s in FINAL)
    submit_s = first_final or elapsed
    with contextlib.suppress(ZeroDivisionError):
        rate = round(total / submit_s)
    return {
        "alert": alert_id,
        "status": status["status"],
        "recipients": total,
        "delivered": counts["delivered"],
        "failed": counts["failed"],
        "missing": total - done,
        "all submitted after (s)": round(submit_s, 1),
        "all receipts after (s)": round(elapsed, 1),
        "messages/s (submission)": rate if total else 0,
    }
