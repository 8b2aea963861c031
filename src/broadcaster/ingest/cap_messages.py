"""CAP 1.2 messages kept as received (migration 0018): every Alert, Update and Cancel the service
took, byte for byte with its digest, and what it did to which alert: the audit trail of the
exchange with the sending system (docs/cap.md, "Messages kept").

A message is written in the transaction that acts on it (for an Alert or Update, in the statement
that marks its alert), so a refused message is not kept and an accepted one always is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from broadcaster.ingest.alerts import CAP_MESSAGE_FIELDS, IdempotencyConflict
from broadcaster.ingest.cap import CapMessage

# The message, the alert marked with it and the link between them, in one statement (one round
# trip on the ingest path). A pair this key already used for another message inserts nothing:
# the caller finds no id and refuses the message. A status other than Actual is completed at
# once, in the creating transaction: nothing is fanned out, and migration 0017's constraint
# keeps the alert from ever being queued again.
MARK_AND_RECORD = """
WITH mark AS (
    UPDATE alerts
    SET cap_sender = $4, cap_identifier = $5, cap_status = $7, cap_msg_type = $8,
        status = CASE WHEN $7 = 'Actual' THEN status ELSE 'completed' END,
        completed_at = CASE WHEN $7 = 'Actual' THEN completed_at ELSE now() END
    WHERE id = $13
    RETURNING id
), message AS (
    INSERT INTO cap_messages (api_key_id, api_key_name, request_id, sender, identifier, sent,
                              status, msg_type, "references", request_hash, body, sha256)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (api_key_id, sender, identifier) DO NOTHING
    RETURNING id
), link AS (
    INSERT INTO cap_message_alerts (message_id, alert_id, effect)
    SELECT message.id, mark.id, 'created' FROM message, mark
)
SELECT id FROM message
"""

RECORD = """
INSERT INTO cap_messages (api_key_id, api_key_name, request_id, sender, identifier, sent,
                          status, msg_type, "references", request_hash, body, sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (api_key_id, sender, identifier) DO NOTHING
RETURNING id
"""

FIND = """
SELECT id, request_hash FROM cap_messages
WHERE api_key_id = $1 AND sender = $2 AND identifier = $3
"""

LINK = """
INSERT INTO cap_message_alerts (message_id, alert_id, effect)
SELECT $1, t.alert_id, $3 FROM unnest($2::bigint[]) AS t(alert_id)
ON CONFLICT DO NOTHING
"""

LINKED = """
SELECT alert_id FROM cap_message_alerts WHERE message_id = $1 AND effect = $2 ORDER BY alert_id
"""

SHOW = f"SELECT jsonb_build_object({CAP_MESSAGE_FIELDS}) FROM cap_messages m WHERE m.id = $1"

BODY = "SELECT body, sha256 FROM cap_messages WHERE id = $1"


@dataclass(frozen=True)
class Received:
    """A CAP message as it came in: the document as read, its bytes, and who sent it."""

    message: CapMessage
    body: bytes
    api_key_id: int
    api_key_name: str
    request_id: str

    def request_hash(self) -> bytes:
        """The message's header: the same identifier again with the same header is a repeat of
        the message (a resent Cancel); with another it is a different message."""
        m = self.message
        fields = {
            "identifier": m.identifier,
            "sender": m.sender,
            "sent": m.sent.isoformat(),
            "status": m.status,
            "msg_type": m.msg_type,
            "references": references(m),
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()

    def params(self) -> tuple[Any, ...]:
        m = self.message
        return (
            self.api_key_id,
            self.api_key_name,
            self.request_id,
            m.sender,
            m.identifier,
            m.sent,
            m.status,
            m.msg_type,
            references(m),
            self.request_hash(),
            self.body,
            hashlib.sha256(self.body).digest(),
        )


def references(message: CapMessage) -> list[str]:
    """The references as the message had them: sender,identifier,sent."""
    return [f"{r.sender},{r.identifier},{r.sent}" for r in message.references]


async def mark_and_record(conn: asyncpg.Connection, alert_id: int, received: Received) -> int:
    """Mark the new alert with the message it came in (a status other than Actual completes it
    at once: nothing is fanned out) and keep the message, linked to it as `created`. Returns the
    message's id; IdempotencyConflict when this key used the pair for another message."""
    message_id = await conn.fetchval(MARK_AND_RECORD, *received.params(), alert_id)
    if message_id is None:
        raise IdempotencyConflict("the identifier was already used for another message")
    return int(message_id)


async def record(conn: asyncpg.Connection, received: Received) -> tuple[int, bool]:
    """Keep a message that creates no alert (a Cancel): (its id, True), or the id of the same
    message kept earlier and False (a repeat). IdempotencyConflict when this key used the pair
    for a different message. In a transaction, a concurrent repeat waits here until the first
    commits or rolls back."""
    message_id = await conn.fetchval(RECORD, *received.params())
    if message_id is not None:
        return int(message_id), True
    m = received.message
    existing = await conn.fetchrow(FIND, received.api_key_id, m.sender, m.identifier)
    if existing is None:  # the first one was rolled back meanwhile
        raise IdempotencyConflict("the identifier is being used by a request in progress")
    if bytes(existing["request_hash"]) != received.request_hash():
        raise IdempotencyConflict("the identifier was already used for another message")
    return int(existing["id"]), False


async def link(
    conn: asyncpg.Connection, message_id: int, alert_ids: list[int], effect: str
) -> None:
    """Record that the message `effect`-ed (updated, cancelled) these alerts."""
    if alert_ids:
        await conn.execute(LINK, message_id, alert_ids, effect)


async def linked(conn: asyncpg.Connection, message_id: int, effect: str) -> list[int]:
    return [r["alert_id"] for r in await conn.fetch(LINKED, message_id, effect)]


async def show(conn: asyncpg.Connection, message_id: int) -> dict[str, Any] | None:
    """The message as an answer shows it (without its body)."""
    found = await conn.fetchval(SHOW, message_id)
    return None if found is None else dict(found)


async def body(conn: asyncpg.Connection, message_id: int) -> tuple[bytes, bytes] | None:
    """The document as received and its SHA-256."""
    row = await conn.fetchrow(BODY, message_id)
    return None if row is None else (bytes(row["body"]), bytes(row["sha256"]))
