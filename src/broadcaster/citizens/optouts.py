"""Carrier-level opt-outs: the recipient answered STOP to one of our senders, and the carrier or
gateway now refuses messages to the number (Twilio error 21610, on submission or in a status
callback).

Such a subscriber is opted out of every alert (`subscribers.status = 'opted_out'`, with when and
why in `opted_out_at` and `opt_out_reason`): the fan-out leaves opted-out subscribers out and a
claim cancels their queued deliveries, so nothing is sent to the number again, through any
gateway. Opting out of the whole service rather than of one gateway is deliberate: the person
asked the police's sender to stop, and a second gateway with another sender would only reach
them against their wish. An operator re-activates a subscriber who opts in again.

Both statements only touch subscribers still active, so a repeated receipt changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

# The subscribers of these deliveries (send path: the dispatcher's write-back, inside the claim's
# transaction).
OPT_OUT_BY_DELIVERY = """
UPDATE subscribers s
SET status = 'opted_out', opted_out_at = now(), opt_out_reason = $2, updated_at = now()
FROM deliveries d
WHERE d.id = ANY($1::bigint[]) AND s.id = d.subscriber_id AND s.status = 'active'
"""

# The subscribers that receipts name (callback path): by message id and gateway, and by the
# receipt's number where the provider uses one id for many recipients (phone not NULL).
OPT_OUT_BY_RECEIPT = """
UPDATE subscribers s
SET status = 'opted_out', opted_out_at = now(), opt_out_reason = r.reason, updated_at = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r(gateway, message_id, phone, reason)
JOIN deliveries d ON d.gateway_message_id = r.message_id AND d.gateway = r.gateway
WHERE s.id = d.subscriber_id AND s.status = 'active'
  AND (r.phone IS NULL OR s.phone = r.phone)
"""


def reason(gateway: str | None, error: str | None) -> str:
    """What an operator sees in `opt_out_reason`: the gateway and the provider's error."""
    return f"carrier opt-out via {gateway or 'gateway'}: {error or 'recipient unsubscribed'}"[:500]


async def opt_out_deliveries(
    conn: asyncpg.Connection, delivery_ids: Sequence[int], why: str
) -> None:
    """Opt out the subscribers of these deliveries."""
    await conn.execute(OPT_OUT_BY_DELIVERY, list(delivery_ids), why)


async def opt_out_receipts(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, str, str | None, str]]
) -> None:
    """Opt out the subscribers named by (gateway, message id, phone or None, reason) rows."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(OPT_OUT_BY_RECEIPT, *(list(c) for c in columns))
