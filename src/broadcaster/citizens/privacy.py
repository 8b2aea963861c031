"""A citizen's data on request: everything stored about a number (for an access request), and
erasure (for a request to be forgotten).

Erasure keeps the subscriber's row, anonymous, so the statistics of past alerts still add up
(deliveries point at an anonymous subscriber): the number goes, locations, pending sign-ups and
leave requests are deleted, inbound messages and receipts lose the number and their raw gateway
data (which carries it), the texts of notices sent to the number are blanked. Tips keep their
text (it is what the citizen told the police). A SHA-256 of the number stays, so a bulk import
does not subscribe an erased number again; a new sign-up by the citizen, with its code, is not
refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

from broadcaster.citizens import places

FIND = """
SELECT id, phone, status, language, reason, source, created_at, confirmed_at, opted_out_at,
       opt_out_reason
FROM subscribers WHERE phone = $1
"""


SIGNUPS = """
SELECT created_at, expires_at, confirmed_at, source, language, reason, locations
FROM signups WHERE subscriber_id = $1 ORDER BY id
"""

INBOUND = """
SELECT received_at, kind, text, alert_id FROM inbound_messages
WHERE subscriber_id = $1 OR phone = $2 ORDER BY id
"""

# Deliveries by subscriber: one probe per alert of the (alert_id, subscriber_id) index, as the
# subscribers_delete_deliveries trigger does, rather than a scan.
DELIVERIES = """
SELECT a.kind, d.status, count(*) AS n, max(d.sent_at) AS last_sent_at
FROM deliveries d JOIN alerts a ON a.id = d.alert_id
WHERE d.alert_id = ANY(ARRAY(SELECT id FROM alerts)) AND d.subscriber_id = $1
GROUP BY a.kind, d.status ORDER BY a.kind, d.status
"""

ERASE_SIGNUPS = "DELETE FROM signups WHERE subscriber_id = $1"
ERASE_LEAVE_REQUESTS = "DELETE FROM leave_requests WHERE subscriber_id = $1"
ERASE_INBOUND = """
UPDATE inbound_messages SET phone = NULL, raw = '{}' WHERE subscriber_id = $1 OR phone = $2
"""
# Receipts name the number (GatewayAPI) or only the message (Twilio, SMPP): both kinds.
ERASE_RECEIPTS = """
UPDATE delivery_receipts SET phone = NULL, raw = '{}'
WHERE phone = $2
   OR (gateway, gateway_message_id) IN (
       SELECT gateway, gateway_message_id FROM deliveries
       WHERE alert_id = ANY(ARRAY(SELECT id FROM alerts)) AND subscriber_id = $1
         AND gateway_message_id IS NOT NULL)
"""
ERASE_NOTICES = """
UPDATE alerts SET message = '' WHERE kind = 'notice' AND id IN (
    SELECT alert_id FROM deliveries
    WHERE alert_id = ANY(ARRAY(SELECT id FROM alerts WHERE kind = 'notice'))
      AND subscriber_id = $1)
"""
ERASE_SUBSCRIBER = """
UPDATE subscribers
SET phone = NULL, status = 'erased', erased_at = now(), erased_hash = $2, reason = NULL,
    opt_out_reason = NULL, updated_at = now()
WHERE id = $1
"""


def number_hash(phone: str) -> bytes:
    return hashlib.sha256(phone.encode()).digest()


async def describe(conn: asyncpg.Connection, phone: str) -> dict[str, Any] | None:
    """Everything stored about the number, or None when it is not known."""
    row = await conn.fetchrow(FIND, phone)
    if row is None:
        return None
    subscriber_id = row["id"]
    return {
        "subscriber": dict(row),
        "locations": await places.show(conn, subscriber_id),
        "signups": [dict(r) for r in await conn.fetch(SIGNUPS, subscriber_id)],
        "inbound_messages": [dict(r) for r in await conn.fetch(INBOUND, subscriber_id, phone)],
        "deliveries": [dict(r) for r in await conn.fetch(DELIVERIES, subscriber_id)],
    }


async def erase(conn: asyncpg.Connection, phone: str) -> int | None:
    """Erase the number's personal data (in one transaction); returns the anonymous subscriber's
    id, or None when the number is not known."""
    async with conn.transaction():
        subscriber_id = await conn.fetchval(
            "SELECT id FROM subscribers WHERE phone = $1 FOR UPDATE", phone
        )
        if subscriber_id is None:
            return None
        await places.delete_all(conn, subscriber_id)
        await conn.execute(ERASE_SIGNUPS, subscriber_id)
        await conn.execute(ERASE_LEAVE_REQUESTS, subscriber_id)
        await conn.execute(ERASE_INBOUND, subscriber_id, phone)
        await conn.execute(ERASE_RECEIPTS, subscriber_id, phone)
        await conn.execute(ERASE_NOTICES, subscriber_id)
        await conn.execute(ERASE_SUBSCRIBER, subscriber_id, number_hash(phone))
    return int(subscriber_id)
