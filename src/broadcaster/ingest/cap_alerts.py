"""CAP 1.2 alerts in the database: what a Cancel or an Update does to the alerts its
<references> name (docs/cap.md). ingest/cap_messages.py marks a new alert with its message and
keeps every message."""

from __future__ import annotations

import asyncpg

from broadcaster.ingest.alerts import NotCancellable, cancel_alert
from broadcaster.ingest.cap import CapError, CapMessage
from broadcaster.ops import audit

REFERENCED = """
SELECT r.i, a.id, a.cap_status
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(sender, identifier, i)
JOIN alerts a ON a.cap_sender = r.sender AND a.cap_identifier = r.identifier
WHERE a.kind = 'alert'
ORDER BY r.i, a.id
"""

# An alert that was never sent (not Actual) is cancelled by its status alone.
CANCEL_UNSENT = """
UPDATE alerts SET status = 'cancelled', cancelled_at = now()
WHERE id = $1 AND cap_status <> 'Actual' AND status = 'completed'
"""


async def _referenced(conn: asyncpg.Connection, message: CapMessage) -> list[asyncpg.Record]:
    refs = message.references
    return await conn.fetch(REFERENCED, [r.sender for r in refs], [r.identifier for r in refs])


def _same_kind(message: CapMessage, cap_status: str) -> bool:
    """An exercise (or test, ...) message acts only on alerts that were not Actual, and an
    Actual one only on Actual alerts: an exercise never cancels a real alert."""
    return (message.status == "Actual") == (cap_status == "Actual")


async def cancel(
    conn: asyncpg.Connection, message: CapMessage, actor: str, request_id: str, message_id: int
) -> list[int]:
    """Cancel every alert a Cancel's references name, with the audit entry of
    POST /v1/alerts/{id}/cancel; CapError for a reference that names none or one of the other
    kind, NotCancellable for one already finished. Run it in a transaction: all or none."""
    rows = await _referenced(conn, message)
    found = {row["i"] for row in rows}
    for i, ref in enumerate(message.references, start=1):
        if i not in found:
            raise CapError(
                422,
                "Unknown alert",
                f"references[{i - 1}]",
                f"no alert from {ref.sender} with identifier {ref.identifier}",
            )
    ids: list[int] = []
    for row in rows:
        if not _same_kind(message, row["cap_status"]):
            raise CapError(
                422,
                "Invalid CAP alert",
                f"references[{row['i'] - 1}]",
                f"a {message.status} message cannot cancel a {row['cap_status']} alert",
            )
        if row["id"] in ids:
            continue
        if row["cap_status"] == "Actual":
            await cancel_alert(conn, row["id"])
        else:
            await conn.execute(CANCEL_UNSENT, row["id"])
        await audit.record(
            conn,
            actor,
            audit.ALERT_CANCELLED,
            f"alert:{row['id']}",
            request_id,
            {"cap": message.identifier, "cap_message": message_id},
        )
        ids.append(row["id"])
    return ids


async def supersede(
    conn: asyncpg.Connection, message: CapMessage, actor: str, request_id: str, message_id: int
) -> list[int]:
    """An Update replaces the alerts it references: those still being sent are cancelled (with
    the audit entry of a cancel); finished ones, unknown references and those of the other kind
    are left alone. Returns the ids of the alerts it updated: every one it names of its own
    kind, cancelled or finished."""
    ids: list[int] = []
    for row in await _referenced(conn, message):
        if not _same_kind(message, row["cap_status"]) or row["id"] in ids:
            continue
        ids.append(row["id"])
        if row["cap_status"] != "Actual":
            continue
        try:
            async with conn.transaction():
                if await cancel_alert(conn, row["id"]):
                    await audit.record(
                        conn,
                        actor,
                        audit.ALERT_CANCELLED,
                        f"alert:{row['id']}",
                        request_id,
                        {"cap": message.identifier, "superseded": True, "cap_message": message_id},
                    )
        except NotCancellable:
            continue
    return ids
