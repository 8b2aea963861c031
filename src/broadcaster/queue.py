"""The deliveries queue: claim a batch of due deliveries, write a batch of results back.

Both are single statements. The claim takes rows in priority order with FOR UPDATE SKIP LOCKED so
several dispatchers never claim the same row, and sets a lease (due_at) so rows of a crashed
worker come due again. `id = ANY(ARRAY(SELECT ...))` keeps index lookups where
`id IN (SELECT ...)` can flip to a hash semi-join over the whole table at large batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CLAIM = """
UPDATE deliveries d
SET status = 'sending',
    attempts = d.attempts + 1,
    due_at = now() + make_interval(secs => $2),
    claimed_by = $3
FROM alerts a, subscribers s
WHERE d.id = ANY(ARRAY(
        SELECT id FROM deliveries
        WHERE status IN ('queued', 'sending') AND due_at <= now()
          AND priority = (SELECT priority FROM deliveries
                          WHERE status IN ('queued', 'sending') AND due_at <= now()
                            AND priority <= $4
                          ORDER BY priority, due_at, id LIMIT 1
                          FOR UPDATE SKIP LOCKED)
        ORDER BY priority, due_at, id
        LIMIT $1
        FOR UPDATE SKIP LOCKED))
  AND a.id = d.alert_id
  AND s.id = d.subscriber_id
RETURNING d.id, d.alert_id, d.attempts, d.priority, s.phone, s.status AS subscriber_status,
          a.message, a.status AS alert_status, (a.expires_at <= now()) AS expired,
          a.expires_at
"""

# Results of one batch. A row whose lease was taken over by another worker is left alone.
# `refund` gives back the attempt the claim counted (throttling is not the message's failure).
COMPLETE = """
UPDATE deliveries d
SET status = r.status,
    attempts = d.attempts - CASE WHEN r.refund THEN 1 ELSE 0 END,
    gateway = coalesce(r.gateway, d.gateway),
    gateway_message_id = coalesce(r.message_id, d.gateway_message_id),
    error = r.error,
    due_at = coalesce(r.due_at, d.due_at),
    sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
    final_at = CASE WHEN r.status IN ('delivered', 'failed', 'expired', 'cancelled')
                    THEN now() END,
    claimed_by = NULL
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $8::bool[])
     AS r(id, status, gateway, message_id, error, due_at, refund)
WHERE d.id = r.id AND d.status = 'sending' AND d.claimed_by = $7
"""

# Give rows back (shutdown): they come due at once for another worker.
RELEASE = """
UPDATE deliveries SET status = 'queued', due_at = now(), claimed_by = NULL,
                      attempts = greatest(attempts - 1, 0)
WHERE id = ANY($1::bigint[]) AND status = 'sending' AND claimed_by = $2
"""

# Alerts with nothing left to submit are completed.
COMPLETE_ALERTS = """
UPDATE alerts a SET status = 'completed', completed_at = now()
WHERE a.id = ANY($1::bigint[]) AND a.status = 'dispatching'
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.alert_id = a.id AND d.status IN ('queued', 'sending'))
"""

QUEUE_DEPTH = """
SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    alert_id: int
    attempts: int
    priority: int
    phone: str
    subscriber_status: str
    message: str
    alert_status: str
    expired: bool
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed delivery."""

    id: int
    status: str
    gateway: str | None = None
    message_id: str | None = None
    error: str | None = None
    due_at: datetime | None = None
    refund_attempt: bool = False


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool,
    limit: int,
    lease_seconds: float,
    worker: str,
    max_priority: int = 2,
) -> list[Claimed]:
    """Claim up to `limit` due deliveries of the most urgent priority present (at most
    `max_priority`: 0 claims emergencies only)."""
    rows = await conn.fetch(CLAIM, limit, lease_seconds, worker, max_priority)
    return [Claimed(**dict(r)) for r in rows]


async def complete(
    conn: asyncpg.Connection | asyncpg.Pool, outcomes: Sequence[Outcome], worker: str
) -> None:
    await conn.execute(
        COMPLETE,
        [o.id for o in outcomes],
        [o.status for o in outcomes],
        [o.gateway for o in outcomes],
        [o.message_id for o in outcomes],
        [o.error for o in outcomes],
        [o.due_at for o in outcomes],
        worker,
        [o.refund_attempt for o in outcomes],
    )


async def release(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int], worker: str) -> None:
    await conn.execute(RELEASE, list(ids), worker)


async def complete_alerts(
    conn: asyncpg.Connection | asyncpg.Pool, alert_ids: Sequence[int]
) -> None:
    await conn.execute(COMPLETE_ALERTS, list(alert_ids))


async def queue_depth(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(QUEUE_DEPTH))
