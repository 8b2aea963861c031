"""The deliveries queue: claim a batch of due deliveries, write its results back.

A claim locks rows (`FOR UPDATE SKIP LOCKED`, most urgent priority first) inside a transaction
that stays open while the batch is submitted; the results are written in one statement and
committed with it. Each submission is thus one row version per delivery, not two (a status
change at the claim and another at the write). Several dispatchers never claim the same row,
and the rows of a dispatcher that dies go back to the queue as they were the moment its
connection drops: PostgreSQL rolls the transaction back. A dispatcher that hangs without dying
is cut off by `idle_in_transaction_session_timeout`, set per claim to the hold time.

`id = ANY(ARRAY(SELECT ...))` keeps index lookups where `id IN (SELECT ...)` can flip to a hash
semi-join over the whole table at large batches. Rows in state 'sending' with a due lease come
from versions that leased rows by status; they are claimed like queued ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg
from asyncpg.transaction import Transaction

CLAIM = """
SELECT d.id, d.alert_id, d.attempts + 1 AS attempts, d.priority, s.phone,
       s.status AS subscriber_status, a.message, a.status AS alert_status,
       (a.expires_at <= now()) AS expired, a.expires_at
FROM deliveries d
JOIN alerts a ON a.id = d.alert_id
JOIN subscribers s ON s.id = d.subscriber_id
WHERE d.id = ANY(ARRAY(
        SELECT id FROM deliveries
        WHERE status IN ('queued', 'sending') AND due_at <= now()
          AND priority = (SELECT priority FROM deliveries
                          WHERE status IN ('queued', 'sending') AND due_at <= now()
                            AND priority <= $2
                          ORDER BY priority, due_at, id LIMIT 1
                          FOR UPDATE SKIP LOCKED)
        ORDER BY priority, due_at, id
        LIMIT $1
        FOR UPDATE SKIP LOCKED))
"""

# The results of one claimed batch, in the claim's transaction (which holds the rows, so they are
# as claimed). Rows are found by primary key (`d.id = ANY($1)`, an index condition; a join on
# unnest alone was planned as a scan of deliveries, and a status condition would let the
# planner walk every open delivery). An attempt is counted here; `refund` leaves it uncounted
# (throttling is not the message's failure).
COMPLETE = """
UPDATE deliveries d
SET status = r.status,
    attempts = d.attempts + CASE WHEN r.refund THEN 0 ELSE 1 END,
    gateway = coalesce(r.gateway, d.gateway),
    gateway_message_id = coalesce(r.message_id, d.gateway_message_id),
    error = r.error,
    due_at = coalesce(r.due_at, d.due_at),
    sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
    final_at = CASE WHEN r.status IN ('delivered', 'failed', 'expired', 'cancelled')
                    THEN now() END,
    claimed_by = NULL
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::bool[])
     AS r(id, status, gateway, message_id, error, due_at, refund)
WHERE d.id = ANY($1::bigint[]) AND d.id = r.id
"""

# Alerts with nothing left to submit are completed. Rows in flight are still 'queued' (locked),
# so an alert is never completed while a batch of it is out.
COMPLETE_ALERTS = """
UPDATE alerts a SET status = 'completed', completed_at = now()
WHERE a.id = ANY($1::bigint[]) AND a.status = 'dispatching'
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.alert_id = a.id AND d.status IN ('queued', 'sending'))
"""

QUEUE_DEPTH = """
SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')
"""


class Claimed(NamedTuple):
    """One claimed delivery, fields in CLAIM's column order. NamedTuples rather than frozen
    dataclasses here and in Outcome: one of each is made per message, and building a frozen
    dataclass was a quarter of the dispatcher's CPU time."""

    id: int
    alert_id: int
    attempts: int  # counting this one
    priority: int
    phone: str
    subscriber_status: str
    message: str
    alert_status: str
    expired: bool
    expires_at: datetime | None


class Outcome(NamedTuple):
    """What became of one claimed delivery."""

    id: int
    status: str
    gateway: str | None = None
    message_id: str | None = None
    error: str | None = None
    due_at: datetime | None = None
    refund_attempt: bool = False


class Batch:
    """Claimed deliveries, locked by an open transaction on `conn` until `finish` commits their
    outcomes or `abandon` (or a dropped connection) puts them back untouched."""

    def __init__(self, conn: asyncpg.Connection, tx: Transaction | None, rows: list[Claimed]):
        self.conn = conn
        self.rows = rows
        self._tx = tx

    def __len__(self) -> int:
        return len(self.rows)

    async def finish(self, outcomes: Sequence[Outcome]) -> None:
        """Write every outcome and commit: the rows are no longer held."""
        if self._tx is None:
            return
        await self.conn.execute(
            COMPLETE,
            [o.id for o in outcomes],
            [o.status for o in outcomes],
            [o.gateway for o in outcomes],
            [o.message_id for o in outcomes],
            [o.error for o in outcomes],
            [o.due_at for o in outcomes],
            [o.refund_attempt for o in outcomes],
        )
        tx, self._tx = self._tx, None
        await tx.commit()

    async def abandon(self) -> None:
        """Roll back: the rows are due again as they were, no attempt counted."""
        if self._tx is not None:
            tx, self._tx = self._tx, None
            await tx.rollback()


async def claim(
    conn: asyncpg.Connection, limit: int, hold_seconds: float, max_priority: int = 2
) -> Batch:
    """Claim up to `limit` due deliveries of the most urgent priority present (at most
    `max_priority`: 0 claims emergencies only). They stay locked by `conn`'s transaction until
    the batch is finished or abandoned; a transaction idle for `hold_seconds` is ended by the
    server. An empty batch holds nothing."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            f"SET LOCAL idle_in_transaction_session_timeout = {max(1, int(hold_seconds * 1000))}"
        )
        rows = await conn.fetch(CLAIM, limit, max_priority)
    except BaseException:
        with contextlib.suppress(Exception):
            await tx.rollback()
        raise
    if not rows:
        await tx.rollback()
        return Batch(conn, None, [])
    return Batch(conn, tx, list(map(Claimed._make, rows)))


async def complete_alerts(
    conn: asyncpg.Connection | asyncpg.Pool, alert_ids: Sequence[int]
) -> None:
    await conn.execute(COMPLETE_ALERTS, list(alert_ids))


async def queue_depth(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(QUEUE_DEPTH))
