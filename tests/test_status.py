"""`broadcaster status`: a snapshot of active alerts, gateways and the queue, read from the
database; `--once` prints it and exits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import httpx
from rich.console import Console
from tests import ops_support
from tests.test_api import client as client

from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.ops import status


async def test_a_snapshot_shows_alert_progress_gateways_and_queue(
    client: httpx.AsyncClient, pool: asyncpg.Pool, db_url: str
) -> None:
    key, active = await ops_support.seed(pool, subscribers=100)
    r = await client.post(
        "/v1/alerts",
        headers={"Authorization": f"Bearer {key}"},
        json={"message": "Test", "area": ops_support.DISTRICT, "priority": "high"},
    )
    assert r.status_code == 202, r.text
    alert_id = r.json()["id"]
    async with pool.acquire() as conn:
        await fan_out_next(conn)
        # 30 went out through "primary" just now: 20 delivered, 5 failed, 5 awaiting receipts.
        await conn.execute(
            """UPDATE deliveries SET gateway = 'primary', sent_at = now(),
                      status = CASE WHEN id % 6 = 0 THEN 'failed'
                                    WHEN id % 6 = 1 THEN 'sent' ELSE 'delivered' END
               WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT 30)"""
        )
        counts = dict(
            await conn.fetch(
                "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY 1", alert_id
            )
        )

    snap = await status.snapshot(pool)
    [alert] = snap.alerts
    assert (alert.id, alert.priority, alert.status) == (alert_id, "high", "dispatching")
    assert alert.recipients == active
    assert alert.submitted == 30
    assert alert.counts["queued"] == active - 30 == counts["queued"]
    [gateway] = snap.gateways
    assert (gateway.name, gateway.sent, gateway.failed) == ("primary", 30, counts["failed"])
    assert gateway.delivered == counts["delivered"]
    assert gateway.rate == 30 / status.RATE_SECONDS
    assert snap.queue == {"emergency": 0, "high": active - 30, "normal": 0}
    assert snap.oldest_due_seconds >= 0
    assert snap.dispatchers == 0

    console = Console(record=True, width=150, color_system=None)
    console.print(status.render(snap))
    text = console.export_text()
    assert "dispatchers 0" in text
    assert f"high {active - 30}" in text
    assert "primary" in text
    assert f"{counts['failed'] / 30:.1%}" in text

    # The command prints the same snapshot and exits.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "broadcaster", "status", "--once"],
        env={**os.environ, "DATABASE_URL": db_url, "COLUMNS": "150"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Alerts" in done.stdout and "Gateways" in done.stdout
    assert "primary" in done.stdout and f"total {active - 30}" in done.stdout
