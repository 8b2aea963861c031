"""Live dispatchers: each heartbeats a row, so operators see how many run (a metric). The rate
limits do not depend on it: they are buckets in PostgreSQL shared by all (ratelimit.py)."""

from __future__ import annotations

import asyncpg

HEARTBEAT = """
INSERT INTO dispatchers (worker) VALUES ($1)
ON CONFLICT (worker) DO UPDATE SET heartbeat_at = now()
"""

LIVE = """
SELECT count(*) FROM dispatchers
WHERE heartbeat_at > now() - make_interval(secs => $1) OR worker = $2
"""

FORGET_DEAD = """
DELETE FROM dispatchers WHERE heartbeat_at < now() - interval '1 hour'
"""

LEAVE = "DELETE FROM dispatchers WHERE worker = $1"


async def heartbeat(pool: asyncpg.Pool, worker: str, live_seconds: float) -> int:
    """Announce this dispatcher; return how many dispatchers are live (itself included)."""
    async with pool.acquire() as conn:
        await conn.execute(HEARTBEAT, worker)
        live = await conn.fetchval(LIVE, live_seconds, worker)
    return max(1, int(live))


async def leave(pool: asyncpg.Pool, worker: str) -> None:
    await pool.execute(LEAVE, worker)


async def forget_dead(pool: asyncpg.Pool) -> None:
    await pool.execute(FORGET_DEAD)
