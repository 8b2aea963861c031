"""The dispatcher's connection pool (the `dispatcher` command's, and the one `serve` gives its
dispatcher beside the API's)."""

from __future__ import annotations

import asyncpg

from broadcaster.database import create_pool
from broadcaster.settings import Settings


def loops(settings: Settings) -> int:
    """Bulk sender loops: the largest gateway concurrency, at most batches_in_flight."""
    concurrency = max((g.concurrency for g in settings.gateways), default=1)
    return min(concurrency, settings.batches_in_flight)


async def dispatcher_pool(settings: Settings, url: str, worker: str) -> asyncpg.Pool:
    """A pool for one dispatcher: one connection per sender loop (held while a batch is out),
    the emergency loop, fan-out, housekeeping, the webhook outbox and two for receipts and
    inbound messages arriving on gateway connections (SMPP).

    Its statements run once per batch of up to thousands of rows: planning each time costs a
    millisecond, while a generic plan (the server's choice after five runs) can be one that is
    right for one shape of batch and slow for another, so plans are custom. Statements have no
    time limit (a fan-out to a million subscribers takes seconds), but a lock is waited for at
    most db_lock_timeout_seconds: a table locked by someone else is then reported and tried
    again with backoff (outage.py) rather than waited on in silence."""
    session = {"plan_cache_mode": "force_custom_plan"}
    if settings.db_lock_timeout_seconds:
        session["lock_timeout"] = milliseconds(settings.db_lock_timeout_seconds)
    return await create_pool(
        url,
        min_size=2,
        max_size=loops(settings) + 6,
        application_name=f"dispatcher {worker}",
        server_settings=session,
    )


def milliseconds(seconds: float) -> str:
    """A PostgreSQL time setting's value for `seconds` (at least 1 ms)."""
    return str(max(1, round(seconds * 1000)))
