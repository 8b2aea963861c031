"""`broadcaster status`: a live terminal view of the service, read from the database.

Active alerts (queued or dispatching, and those finished in the last ten minutes) with a
progress bar each, per-gateway rate (messages accepted in the last ten seconds) and errors, the
queue by priority and the most overdue delivery, and the live dispatchers. Refreshed every
second; `--once` prints one snapshot (for scripts).

Its queries read the active alerts' deliveries by the alert index, the open deliveries (as the
queue gauges do) and the dispatchers' heartbeats: a few milliseconds for alerts of thousands.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from broadcaster.database import connect
from broadcaster.dispatch.queue import QUEUE_STATS
from broadcaster.ingest.alerts import PRIORITY_NAMES
from broadcaster.migrate import ensure_migrated

RECENT_MINUTES = 10
RATE_SECONDS = 10
MAX_ALERTS = 20

ALERTS = f"""
SELECT id, priority, status, recipients, created_at, now() - created_at AS age
FROM alerts
WHERE kind = 'alert'
  AND (status IN ('queued', 'dispatching')
       OR completed_at > now() - interval '{RECENT_MINUTES} minutes'
       OR cancelled_at > now() - interval '{RECENT_MINUTES} minutes')
ORDER BY id DESC
LIMIT {MAX_ALERTS}
"""

COUNTS = f"""
SELECT alert_id, coalesce(gateway, '') AS gateway, status, count(*) AS n,
       count(*) FILTER (WHERE sent_at > now() - interval '{RATE_SECONDS} seconds') AS recent
FROM deliveries
WHERE alert_id = ANY($1::bigint[])
GROUP BY 1, 2, 3
"""

LIVE_DISPATCHERS = "SELECT count(*) FROM dispatchers WHERE heartbeat_at > now() - interval '3 s'"

DONE = ("sent", "delivered", "failed", "expired", "cancelled")
FINAL = ("delivered", "failed", "expired", "cancelled")


@dataclass
class AlertRow:
    id: int
    priority: str
    status: str
    recipients: int | None
    age_seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def submitted(self) -> int:
        return sum(self.counts.get(s, 0) for s in DONE)


@dataclass
class GatewayRow:
    name: str
    rate: float  # messages accepted per second over the last RATE_SECONDS
    sent: int
    delivered: int
    failed: int


@dataclass
class Snapshot:
    taken_at: datetime
    alerts: list[AlertRow]
    gateways: list[GatewayRow]
    queue: dict[str, int]
    oldest_due_seconds: float
    dispatchers: int


async def snapshot(conn: asyncpg.Connection | asyncpg.Pool) -> Snapshot:
    """Read the service's state: a handful of queries, no writes."""
    alert_rows = await conn.fetch(ALERTS)
    alerts = {
        r["id"]: AlertRow(
            r["id"],
            PRIORITY_NAMES.get(r["priority"], str(r["priority"])),
            r["status"],
            r["recipients"],
            r["age"].total_seconds(),
        )
        for r in alert_rows
    }
    gateways: dict[str, GatewayRow] = {}
    for r in await conn.fetch(COUNTS, list(alerts)):
        alert = alerts[r["alert_id"]]
        alert.counts[r["status"]] = alert.counts.get(r["status"], 0) + r["n"]
        if not r["gateway"]:
            continue
        g = gateways.setdefault(r["gateway"], GatewayRow(r["gateway"], 0.0, 0, 0, 0))
        g.rate += r["recent"] / RATE_SECONDS
        if r["status"] in ("sent", "delivered", "failed", "expired"):
            g.sent += r["n"]
        if r["status"] == "delivered":
            g.delivered += r["n"]
        if r["status"] == "failed":
            g.failed += r["n"]
    queue = {name: 0 for name in PRIORITY_NAMES.values()}
    overdue = 0.0
    for r in await conn.fetch(QUEUE_STATS):
        queue[PRIORITY_NAMES.get(r["priority"], str(r["priority"]))] = r["depth"]
        overdue = max(overdue, r["overdue"] or 0.0)
    return Snapshot(
        taken_at=await conn.fetchval("SELECT now()"),
        alerts=list(alerts.values()),
        gateways=sorted(gateways.values(), key=lambda g: g.name),
        queue=queue,
        oldest_due_seconds=overdue,
        dispatchers=int(await conn.fetchval(LIVE_DISPATCHERS)),
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(snap: Snapshot) -> RenderableType:
    """The snapshot as rich renderables: a header line, alerts, gateways."""
    queued = sum(snap.queue.values())
    header = Text.assemble(
        ("broadcaster ", "bold"),
        f"{snap.taken_at:%Y-%m-%d %H:%M:%S %Z}  ",
        ("dispatchers ", "dim"),
        (str(snap.dispatchers), "bold red" if snap.dispatchers == 0 else "bold green"),
        ("  queue ", "dim"),
        " ".join(f"{name} {n}" for name, n in snap.queue.items()) + f" (total {queued})",
        ("  oldest due ", "dim"),
        (
            _duration(snap.oldest_due_seconds),
            "bold red" if snap.oldest_due_seconds > 120 else "",
        ),
    )
    alerts = Table(title="Alerts", title_justify="left", expand=True)
    for name in ("id", "priority", "status", "age", "recipients", "sent", "delivered", "failed"):
        alerts.add_column(name, justify="right" if name not in ("priority", "status") else "left")
    alerts.add_column("progress", ratio=1)
    for a in snap.alerts:
        total = a.recipients or 0
        alerts.add_row(
            str(a.id),
            a.priority,
            a.status,
            _duration(a.age_seconds),
            "-" if a.recipients is None else str(a.recipients),
            str(a.submitted),
            str(a.counts.get("delivered", 0)),
            str(a.counts.get("failed", 0)),
            ProgressBar(total=max(total, 1), completed=a.submitted if total else 0),
        )
    if not snap.alerts:
        alerts.add_row("-", "no active alerts", "", "", "", "", "", "", "")
    gateways = Table(title="Gateways (active alerts)", title_justify="left", expand=True)
    for name in ("gateway", "rate/s", "sent", "delivered", "failed", "error ratio"):
        gateways.add_column(name, justify="left" if name == "gateway" else "right")
    for g in snap.gateways:
        ratio = g.failed / g.sent if g.sent else 0.0
        gateways.add_row(
            g.name,
            f"{g.rate:.0f}",
            str(g.sent),
            str(g.delivered),
            str(g.failed),
            Text(f"{ratio:.1%}", style="bold red" if ratio > 0.2 else ""),
        )
    return Group(header, alerts, gateways)


async def run(url: str, *, once: bool, interval: float = 1.0) -> int:
    """Print one snapshot (`once`), or a live view refreshed every `interval` until Ctrl-C."""
    conn = await connect(url, server_settings={"application_name": "broadcaster status"})
    try:
        await ensure_migrated(conn)
        console = Console()
        if once:
            console.print(render(await snapshot(conn)))
            return 0
        with Live(render(await snapshot(conn)), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await snapshot(conn)), refresh=True)
    finally:
        await conn.close()
