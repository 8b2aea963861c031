"""The citizens' loop in the dispatcher process: forwards tips (tip_forwarding.py) and, once an
hour, forgets the pending subscriber rows that only carried an answer to a keyword from a number
we did not know (inbound.py), once they are `sms_pending_days` old and nothing else came of
them (no areas, no sign-up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import asyncpg

from broadcaster.citizens import tip_forwarding
from broadcaster.settings import Settings

log = logging.getLogger(__name__)

FORGET_EVERY_SECONDS = 3600.0

FORGET_STRANGERS = """
DELETE FROM subscribers s
WHERE s.status = 'pending' AND s.source = 'sms' AND s.updated_at < now() - $1::interval
  AND NOT EXISTS (SELECT 1 FROM subscriber_locations l WHERE l.subscriber_id = s.id)
  AND NOT EXISTS (SELECT 1 FROM signups g WHERE g.subscriber_id = s.id)
"""


async def forget_strangers(conn: asyncpg.Connection | asyncpg.Pool, days: int) -> int:
    """Delete the pending rows made by SMS keywords older than `days`; returns how many."""
    status = await conn.execute(FORGET_STRANGERS, timedelta(days=days))
    return int(status.rsplit(" ", 1)[-1])


async def run(pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event) -> None:
    await asyncio.gather(
        tip_forwarding.run(pool, settings, stop), _forget_loop(pool, settings, stop)
    )


async def _forget_loop(pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            forgotten = await forget_strangers(pool, settings.sms_pending_days)
            if forgotten:
                log.info("pending subscribers made by SMS forgotten", extra={"count": forgotten})
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("forgetting pending subscribers failed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FORGET_EVERY_SECONDS)
