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
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from asyncpg.transaction import Transaction

from broadcaster.citizens import optouts
from broadcaster.database import BUSY, DISK_FULL, OUT_OF_RESOURCES, trouble
from broadcaster.ingest.alerts import PRIORITY_NAMES
from broadcaster.ops import metrics

# The text is the subscriber's language's where the alert has one (alert_texts, looked up only
# for alerts that have any). The claim also sets idle_in_transaction_session_timeout for its
# transaction ($3, in ms; set_config(..., true) is SET LOCAL), evaluated once as an init plan:
# one round trip less.
CLAIM = """
SELECT d.id, d.alert_id, d.attempts + 1 AS attempts, d.priority, s.phone,
       s.status AS subscriber_status,
       CASE WHEN a.multilingual
            THEN coalesce((SELECT t.message FROM alert_texts t
                           WHERE t.alert_id = a.id AND t.language = s.language), a.message)
            ELSE a.message END AS message,
       a.status AS alert_status,
       (a.expires_at <= now()) AS expired, a.expires_at, a.kind
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
  AND (SELECT set_config('idle_in_transaction_session_timeout', $3, true)) IS NOT NULL
"""

# The results of one claimed batch, in the claim's transaction (which holds the rows, so they are
# as claimed). Outcomes come grouped: rows ($1) each name their group ($2), and a group carries
# the result many rows share (one gateway request: same status, gateway and message id). The two
# per-row arrays travel as text literals: asyncpg's array encoder checks every element against
# collections.abc, which cost 4 ms per batch of 1000 for per-row arrays of every column.
# Rows are found by one primary-key scan over the whole array (`d.id = ANY(...)`); `d.id + 0`
# keeps the join on the row list from becoming an index condition too, which gave a nested loop
# re-evaluating the array for every row (150 ms a batch). A join on unnest alone was planned as a
# scan of deliveries, and a status condition would let the planner walk every open delivery.
# An attempt is counted here; `refund` leaves it uncounted (throttling is not the message's
# failure).
COMPLETE = """
UPDATE deliveries d
SET status = g.status,
    attempts = d.attempts + CASE WHEN g.refund THEN 0 ELSE 1 END,
    gateway = coalesce(g.gateway, d.gateway),
    gateway_message_id = coalesce(g.message_id, d.gateway_message_id),
    error = g.error,
    due_at = coalesce(g.due_at, d.due_at),
    sent_at = CASE WHEN g.status = 'sent' THEN now() ELSE d.sent_at END,
    final_at = CASE WHEN g.status IN ('delivered', 'failed', 'expired', 'cancelled')
                    THEN now() END,
    claimed_by = NULL
FROM unnest($1::text::bigint[], $2::text::int[]) AS r(id, grp)
JOIN unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::bool[])
     WITH ORDINALITY AS g(status, gateway, message_id, error, due_at, refund, grp)
     ON g.grp = r.grp
WHERE d.id = ANY($1::text::bigint[]) AND d.id + 0 = r.id
"""

# Alerts with nothing left to submit are completed. Rows in flight are still 'queued' (locked),
# so an alert is never completed while a batch of it is out. Each completed alert returns the
# seconds from its creation to its first and last submission (for the metrics: once per alert,
# by the one statement that completes it, one pass over its deliveries by the alert index).
COMPLETE_ALERTS = """
WITH done AS (
    UPDATE alerts a SET status = 'completed', completed_at = now()
    WHERE a.id = ANY($1::bigint[]) AND a.status = 'dispatching'
      AND NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.alert_id = a.id AND d.status IN ('queued', 'sending'))
    RETURNING a.id, a.priority, a.created_at, a.kind
)
SELECT done.priority,
       extract(epoch FROM s.first_sent - done.created_at)::float8 AS first_seconds,
       extract(epoch FROM s.last_sent - done.created_at)::float8 AS last_seconds
FROM done
CROSS JOIN LATERAL (SELECT min(d.sent_at) AS first_sent, max(d.sent_at) AS last_sent
                    FROM deliveries d WHERE d.alert_id = done.id) s
WHERE done.kind = 'alert'
"""

# Deliveries waiting, by priority, and how long the most overdue of them has been due.
QUEUE_STATS = """
SELECT priority, count(*) AS depth,
       extract(epoch FROM now() - min(due_at) FILTER (WHERE due_at <= now()))::float8 AS overdue
FROM deliveries WHERE status IN ('queued', 'sending')
GROUP BY priority
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
    kind: str  # 'alert', or 'notice': a one-off SMS to one number (citizens/notices.py)


class Outcome(NamedTuple):
    """What became of one claimed delivery. `opted_out`: the carrier refused it because the
    recipient unsubscribed from our sender; the subscriber is opted out with the write."""

    id: int
    status: str
    gateway: str | None = None
    message_id: str | None = None
    error: str | None = None
    due_at: datetime | None = None
    refund_attempt: bool = False
    opted_out: bool = False
    # Back to the queue due at once because another gateway is usable (counted, not written).
    failover: bool = False
    # Back to the queue because the gateway throttled us (counted, not written).
    throttled: bool = False


class Batch:
    """Claimed deliveries, locked by an open transaction on `conn` until `finish` commits their
    outcomes or `abandon` (or a dropped connection) puts them back untouched."""

    def __init__(self, conn: asyncpg.Connection, tx: Transaction | None, rows: list[Claimed]):
        self.conn = conn
        self.rows = rows
        self._tx = tx
        # After `finish` raised: whether the rows are still held and `finish` may be called
        # again (the write was refused for now, and undone back to its savepoint).
        self.held = False

    def __len__(self) -> int:
        return len(self.rows)

    async def finish(self, outcomes: Sequence[Outcome]) -> None:
        """Write every outcome and commit: the rows are no longer held.

        The write runs from a savepoint. Refused for a passing reason (the disk full, a
        statement or lock timeout: `refused_for_now`), it is undone to the savepoint and the
        claim's transaction carries on holding the rows, so the caller can write the same
        outcomes again later instead of putting back rows the gateway has taken (which would
        send them twice)."""
        if self._tx is None:
            return
        self.held = False
        await self.conn.execute("SAVEPOINT write_back")
        try:
            await self.conn.execute(COMPLETE, *complete_args(outcomes))
            opted_out = [o for o in outcomes if o.opted_out]
            if opted_out:
                why = optouts.reason(opted_out[0].gateway, opted_out[0].error)
                await optouts.opt_out_deliveries(self.conn, [o.id for o in opted_out], why)
        except asyncpg.PostgresError as exc:
            if refused_for_now(exc):
                await self.conn.execute("ROLLBACK TO SAVEPOINT write_back")
                self.held = True
            raise
        tx, self._tx = self._tx, None
        await tx.commit()

    async def abandon(self) -> None:
        """Roll back: the rows are due again as they were, no attempt counted."""
        self.held = False
        if self._tx is not None:
            tx, self._tx = self._tx, None
            await tx.rollback()


def refused_for_now(exc: BaseException) -> bool:
    """Whether a statement was refused for a passing reason on a connection that is still
    good: the disk full, out of memory, a statement or lock timeout."""
    return trouble(exc) in (DISK_FULL, OUT_OF_RESOURCES, BUSY)


def complete_args(outcomes: Sequence[Outcome]) -> tuple[Any, ...]:
    """COMPLETE's parameters: the rows as a text literal, each row's group (1-based) likewise,
    then one array per column over the distinct results."""
    groups: dict[tuple[Any, ...], int] = {}
    members: list[int] = []
    for o in outcomes:
        key = o[1:7]  # what COMPLETE writes: everything but the id and opted_out
        group = groups.get(key)
        if group is None:
            group = groups[key] = len(groups) + 1
        members.append(group)
    columns = list(zip(*groups, strict=True)) if groups else [()] * 6
    return (
        _int_array(o.id for o in outcomes),
        _int_array(members),
        *(list(column) for column in columns),
    )


def _int_array(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


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
        rows = await conn.fetch(CLAIM, limit, max_priority, str(max(1, int(hold_seconds * 1000))))
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
    """Complete the alerts among `alert_ids` that have nothing left to submit."""
    for row in await conn.fetch(COMPLETE_ALERTS, list(alert_ids)):
        if row["first_seconds"] is None:
            continue  # nothing was ever accepted by a gateway
        priority = PRIORITY_NAMES.get(row["priority"], "normal")
        metrics.ALERT_FIRST_SUBMISSION_SECONDS.labels(priority).observe(row["first_seconds"])
        metrics.ALERT_LAST_SUBMISSION_SECONDS.labels(priority).observe(row["last_seconds"])


async def refresh_gauges(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Set the queue's gauges (depth by priority, the most overdue delivery) from the database;
    returns the depth."""
    rows = await conn.fetch(QUEUE_STATS)
    depth = {r["priority"]: r["depth"] for r in rows}
    for number, name in PRIORITY_NAMES.items():
        metrics.QUEUE_DEPTH.labels(name).set(depth.get(number, 0))
    overdue = [r["overdue"] for r in rows if r["overdue"] is not None]
    metrics.QUEUE_OLDEST_DUE.set(max(overdue, default=0.0))
    return sum(depth.values())
