"""Delivery receipts: stored raw for audit, then applied to deliveries by a monotonic rule.

- Only a delivery in state 'sent' moves, and only to a final state (delivered, failed, expired);
  final states never change again, so duplicates and late transient receipts are no-ops.
- A receipt whose message id we have not recorded yet (the gateway's callback beat our write of
  the send result) stays unapplied and is applied once the send is recorded.
- A receipt for an id we never sent is kept for audit and touches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway_adapters.base import ReceiptUpdate

INSERT_RECEIPTS = """
INSERT INTO delivery_receipts (gateway, gateway_message_id, phone, state, provider_status,
                               error, occurred_at, raw)
SELECT $1, r.message_id, r.phone, r.state, r.provider_status, r.error, r.occurred_at, r.raw
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
            $8::jsonb[]) AS r(message_id, phone, state, provider_status, error, occurred_at, raw)
RETURNING id
"""

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


async def record_receipts(
    conn: asyncpg.Connection, gateway: str, updates: Sequence[ReceiptUpdate]
) -> int:
    """Store and apply receipts in one transaction; returns how many were stored."""
    if not updates:
        return 0
    async with conn.transaction():
        rows = await conn.fetch(
            INSERT_RECEIPTS,
            gateway,
            [u.gateway_message_id for u in updates],
            [u.phone for u in updates],
            [str(u.state) for u in updates],
            [u.provider_status for u in updates],
            [u.error for u in updates],
            [u.occurred_at for u in updates],
            [dict(u.raw) for u in updates],
        )
        await _apply(
            conn, [r["id"] for r in rows], gateway, by_message=any(u.phone is None for u in updates)
        )
    return len(rows)


async def _apply(
    conn: asyncpg.Connection | asyncpg.Pool, ids: list[int], gateway: str, *, by_message: bool
) -> None:
    await conn.execute(APPLY_BY_RECIPIENT, ids, gateway)
    if by_message:
        await conn.execute(APPLY_BY_MESSAGE, ids, gateway)


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
