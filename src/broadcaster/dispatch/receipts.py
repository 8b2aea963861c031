"""Delivery receipts: stored raw for audit, then applied to deliveries by a monotonic rule.

- Only a delivery in state 'sent' moves, and only to a final state (delivered, failed, expired);
  final states never change again, so duplicates and late transient receipts are no-ops.
- A receipt whose message id we have not recorded yet (the gateway's callback beat our write of
  the send result) stays unapplied and is applied once the send is recorded.
- A receipt for an id we never sent is kept for audit and touches nothing.

New receipts are recorded by one statement (`RECORD_RECEIPTS`): it matches them to deliveries,
moves the deliveries and inserts the receipts already marked applied, in one round trip, for a
whole batch (the API's receipt writer commits the receipts of many requests at once). The
statements by receipt id (`APPLY_*`) remain for receipts stored unapplied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from broadcaster.citizens import optouts
from broadcaster.ops import metrics
from gateway_adapters.base import ReceiptUpdate

# Apply the given receipts. Per delivery the strongest receipt wins (a final one before a
# transient one, the earliest final first); receipts that found their delivery are marked applied.
# The `moved` CTE runs to completion although nothing reads it (PostgreSQL's rule for
# data-modifying WITH clauses). There is one statement for receipts that name the recipient
# (GatewayAPI: one id per batch) and one for receipts whose id alone is the message; one
# statement for both made the planner expect a whole batch per receipt and scan deliveries.
_APPLY = """
WITH r AS (
    SELECT DISTINCT ON (rc.gateway_message_id, rc.phone)
           rc.gateway_message_id, rc.phone, rc.state, rc.error, rc.occurred_at
    FROM delivery_receipts rc
    WHERE rc.id = ANY($1::bigint[]) AND rc.gateway = $2 AND rc.phone IS {phone}
    ORDER BY rc.gateway_message_id, rc.phone, (rc.state = 'sent'), rc.occurred_at NULLS LAST, rc.id
), matched AS (
    SELECT d.id AS delivery_id, r.gateway_message_id, r.phone, r.state, r.error, r.occurred_at
    FROM r
    {match}
), moved AS (
    UPDATE deliveries d
    SET status = m.state, error = coalesce(m.error, d.error),
        final_at = coalesce(m.occurred_at, now())
    FROM matched m
    WHERE d.id = m.delivery_id AND d.status = 'sent' AND m.state <> 'sent'
    RETURNING d.id
)
UPDATE delivery_receipts rc SET applied = true
FROM matched m
WHERE rc.id = ANY($1::bigint[])
  AND rc.gateway_message_id = m.gateway_message_id
  AND rc.phone IS NOT DISTINCT FROM m.phone
"""
APPLY_BY_RECIPIENT = _APPLY.format(
    phone="NOT NULL",
    match="""JOIN subscribers s ON s.phone = r.phone
    JOIN deliveries d ON d.gateway_message_id = r.gateway_message_id AND d.subscriber_id = s.id
                     AND d.gateway = $2""",
)
APPLY_BY_MESSAGE = _APPLY.format(
    phone="NULL",
    match="JOIN deliveries d ON d.gateway_message_id = r.gateway_message_id AND d.gateway = $2",
)

PENDING_FOR_MESSAGES = """
SELECT id FROM delivery_receipts
WHERE NOT applied AND gateway = $1 AND gateway_message_id = ANY($2::text[])
"""

# Opt-out receipts of a batch that found no delivery yet (their opt-out waits for them).
MARK_OPTED_OUT = """
UPDATE delivery_receipts rc SET opted_out = true
FROM unnest($1::text[], $2::text[], $3::text[]) AS o(gateway, message_id, phone)
WHERE NOT rc.applied AND rc.gateway = o.gateway AND rc.gateway_message_id = o.message_id
  AND rc.phone IS NOT DISTINCT FROM o.phone
"""

OPTED_OUT_APPLIED = """
SELECT gateway, gateway_message_id, phone, error FROM delivery_receipts
WHERE id = ANY($1::bigint[]) AND applied AND opted_out
"""

# Safety net for a receipt committed while the matching send result was being written: that
# race lasts milliseconds, so only recent receipts are retried. Older unapplied ones are for ids
# we never recorded (kept for audit) and are not looked at again.
PENDING_RECENT = """
SELECT gateway, array_agg(id) AS ids FROM (
    SELECT id, gateway FROM delivery_receipts
    WHERE NOT applied AND received_at > now() - interval '2 minutes'
    ORDER BY received_at DESC LIMIT $1) p
GROUP BY gateway
"""


# Record and apply new receipts in one statement, one row per receipt in the arrays ($1 the
# gateway of each). Matching comes before the insert, so each receipt is inserted once, already
# marked applied when it found its delivery (an insert followed by an update of `applied` wrote
# every receipt twice, and the update had to find the rows again). Per delivery the strongest
# receipt of the batch moves it: a final one before a transient one, the earliest final first,
# then the first to arrive. A receipt that names the recipient (GatewayAPI: one id per batch)
# matches by id and subscriber; one without (phone NULL) by its id alone.
#
# The plan must be index lookups per receipt whatever the batch size (1 to 1000) and whatever
# the statistics say; tests/test_receipt_writer.py checks it. The receipts are a CTE without
# statistics, so:
# - the lookups are a lateral subquery that OFFSET 0 keeps from being flattened into a join
#   (as a join, the planner hash-joined a scan of deliveries);
# - the update finds its rows by primary key through `= ANY(ARRAY(...))`: as a join with the
#   status condition it scanned deliveries once the statistics said few rows were 'sent' (after
#   a broadcast's receipts are in, they say so);
# - the by-message branch is only in the statement for batches that need it: it expects a whole
#   GatewayAPI batch (1000 rows) per receipt, and those estimates made the batch look so costly
#   that a server with JIT would compile the statement on every execution.
_RECORD = """
WITH r AS MATERIALIZED (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::timestamptz[], $8::jsonb[])
         WITH ORDINALITY AS r(gateway, message_id, phone, state, provider_status, error,
                              occurred_at, raw, n)
), matched AS MATERIALIZED (
    SELECT r.n, m.delivery_id
    FROM r CROSS JOIN LATERAL (
        SELECT d.id AS delivery_id
        FROM subscribers s
        JOIN deliveries d ON d.gateway_message_id = r.message_id AND d.subscriber_id = s.id
        WHERE s.phone = r.phone AND d.gateway = r.gateway{by_message}
        OFFSET 0
    ) m
), best AS MATERIALIZED (
    SELECT DISTINCT ON (m.delivery_id) m.delivery_id, r.state, r.error, r.occurred_at
    FROM matched m JOIN r ON r.n = m.n
    WHERE r.state <> 'sent'
    ORDER BY m.delivery_id, r.occurred_at NULLS LAST, r.n
), moved AS (
    UPDATE deliveries d
    SET status = b.state, error = coalesce(b.error, d.error),
        final_at = coalesce(b.occurred_at, now())
    FROM best b
    WHERE d.id = ANY (ARRAY(SELECT delivery_id FROM best)) AND d.id = b.delivery_id
      AND d.status = 'sent'
    RETURNING d.gateway, d.status,
              coalesce(extract(epoch FROM now() - d.sent_at)::float8, 0) AS seconds
), stored AS (
    INSERT INTO delivery_receipts (gateway, gateway_message_id, phone, state, provider_status,
                                   error, occurred_at, raw, applied)
    SELECT r.gateway, r.message_id, r.phone, r.state, r.provider_status, r.error,
           r.occurred_at, r.raw, a.n IS NOT NULL
    FROM r LEFT JOIN (SELECT DISTINCT n FROM matched) a ON a.n = r.n
    ORDER BY r.n
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS stored, NULL::text AS gateway, NULL::text AS status,
       NULL::int AS bucket, NULL::bigint AS n, NULL::float8 AS seconds
UNION ALL
SELECT NULL, gateway, status, width_bucket(seconds, '{bounds}'::float8[]), count(*), sum(seconds)
FROM moved GROUP BY 2, 3, 4
"""
# The statement answers with the number of receipts stored (first row) and, for the metrics, the
# deliveries the receipts made final, grouped by gateway, status and latency bucket (the time from
# submission to now, counted into metrics.RECEIPT_SECONDS's buckets): one row per group, however
# many receipts, so no Python runs per receipt for them.
_BOUNDS = "{" + ",".join(map(str, metrics.RECEIPT_SECONDS.buckets)) + "}"
# Every receipt names its recipient (GatewayAPI, and Twilio callbacks with 'To').
RECORD_RECEIPTS = _RECORD.format(by_message="", bounds=_BOUNDS)
# Some do not: those match every delivery of their message id.
RECORD_RECEIPTS_BY_MESSAGE = _RECORD.format(
    bounds=_BOUNDS,
    by_message="""
        UNION ALL
        SELECT d.id
        FROM deliveries d
        WHERE r.phone IS NULL AND d.gateway_message_id = r.message_id AND d.gateway = r.gateway""",
)


def record_arguments(
    batch: Sequence[tuple[str, Sequence[ReceiptUpdate]]],
) -> tuple[list[Any], ...]:
    """The arrays of `RECORD_RECEIPTS` for (gateway, receipts) pairs, in order."""
    pairs = [(gateway, u) for gateway, updates in batch for u in updates]
    return (
        [gateway for gateway, _ in pairs],
        [u.gateway_message_id for _, u in pairs],
        [u.phone for _, u in pairs],
        [str(u.state) for _, u in pairs],
        [u.provider_status for _, u in pairs],
        [u.error for _, u in pairs],
        [u.occurred_at for _, u in pairs],
        [u.raw if type(u.raw) is dict else dict(u.raw) for _, u in pairs],
    )


async def record_batch(
    conn: asyncpg.Connection,
    batch: Sequence[tuple[str, Sequence[ReceiptUpdate]]],
    *,
    statement_timeout: float | None = None,
) -> int:
    """Store and apply the receipts of several (gateway, receipts) pairs; returns how many were
    stored. One statement, so outside a transaction block it commits on its own (the server
    answers after the commit) and costs one round trip."""
    args = record_arguments(batch)
    if not args[0]:
        return 0
    statement = RECORD_RECEIPTS_BY_MESSAGE if None in args[2] else RECORD_RECEIPTS
    opt_outs = [
        (gateway, u.gateway_message_id, u.phone, optouts.reason(gateway, u.error))
        for gateway, updates in batch
        for u in updates
        if u.opted_out
    ]
    if opt_outs:
        # Rare (a carrier opt-out): the receipts and the opt-out commit together. A receipt that
        # did not find its delivery yet remembers the opt-out for when it is applied.
        async with conn.transaction():
            rows = await conn.fetch(statement, *args, timeout=statement_timeout)
            await optouts.opt_out_receipts(conn, opt_outs)
            await conn.execute(
                MARK_OPTED_OUT, *(list(c) for c in list(zip(*opt_outs, strict=True))[:3])
            )
    else:
        rows = await conn.fetch(statement, *args, timeout=statement_timeout)
    stored = int(rows[0]["stored"])
    if stored != len(args[0]):
        raise RuntimeError(f"stored {stored} of {len(args[0])} receipts")
    count_final(rows[1:])
    return stored


def count_final(rows: Sequence[asyncpg.Record]) -> None:
    """Count the deliveries a batch of receipts made final (RECORD_RECEIPTS's groups)."""
    for r in rows:
        metrics.DELIVERIES.labels(r["gateway"], r["status"]).inc(r["n"])
    metrics.RECEIPT_SECONDS.add_rows(
        (r["gateway"], r["bucket"], r["n"], r["seconds"]) for r in rows
    )


async def record_receipts(
    conn: asyncpg.Connection, gateway: str, updates: Sequence[ReceiptUpdate]
) -> int:
    """Store and apply receipts in one transaction; returns how many were stored."""
    return await record_batch(conn, [(gateway, updates)])


async def _apply(
    conn: asyncpg.Connection | asyncpg.Pool, ids: list[int], gateway: str, *, by_message: bool
) -> None:
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            await _apply(acquired, ids, gateway, by_message=by_message)
        return
    async with conn.transaction():
        await conn.execute(APPLY_BY_RECIPIENT, ids, gateway)
        if by_message:
            await conn.execute(APPLY_BY_MESSAGE, ids, gateway)
        # Carrier opt-outs among the receipts just applied (rare: usually none).
        opted = await conn.fetch(OPTED_OUT_APPLIED, ids)
        if opted:
            await optouts.opt_out_receipts(
                conn,
                [
                    (
                        r["gateway"],
                        r["gateway_message_id"],
                        r["phone"],
                        optouts.reason(gateway, r["error"]),
                    )
                    for r in opted
                ],
            )


async def apply_pending(
    conn: asyncpg.Connection | asyncpg.Pool, gateway: str, message_ids: Sequence[str]
) -> None:
    """Apply receipts that arrived before the send results for these message ids."""
    ids = [r["id"] for r in await conn.fetch(PENDING_FOR_MESSAGES, gateway, list(message_ids))]
    if ids:
        await _apply(conn, ids, gateway, by_message=True)


async def sweep_pending(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 10_000) -> None:
    for row in await conn.fetch(PENDING_RECENT, limit):
        await _apply(conn, row["ids"], row["gateway"], by_message=True)
