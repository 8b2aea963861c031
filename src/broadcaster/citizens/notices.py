"""Notices: one-off SMS to one number (a sign-up code, the answer to a keyword).

A notice is an alert of kind 'notice' with its single delivery, created already fanned out, so
it reaches the gateways like any alert (rate limits, retries, fail-over, receipts) and wakes the
dispatchers like one. It goes out at high priority (ahead of a running normal broadcast, behind
an emergency) and expires when its content is no use any more (a code after its lifetime). Its
delivery goes to the number whatever the subscriber's status: the citizen asked for it.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from broadcaster.ingest.alerts import PRIORITIES, WAKEUP_CHANNEL

# What a notice is for, kept in the alert's reference (operators count them by it).
PURPOSES = frozenset({"signup-code", "leave-code", "stop", "start", "help", "join"})

CREATE_NOTICE = """
WITH alert AS (
    INSERT INTO alerts (kind, message, area, priority, status, reference, expires_at,
                        recipients, fanned_out_at)
    VALUES ('notice', $1, '{}', $2, 'dispatching', $3, $4, 1, now())
    RETURNING id, priority
), delivery AS (
    INSERT INTO deliveries (alert_id, subscriber_id, priority)
    SELECT alert.id, $5, alert.priority FROM alert
), wakeup AS (
    SELECT pg_notify($6, 'notice') FROM alert
)
SELECT alert.id FROM alert, wakeup
"""

# Once a notice is final its text (which may hold a code) is no longer needed.
BLANK_FINISHED = """
UPDATE alerts SET message = ''
WHERE kind = 'notice' AND status <> 'dispatching' AND message <> ''
"""


async def send_notice(
    conn: asyncpg.Connection,
    subscriber_id: int,
    text: str,
    purpose: str,
    expires_at: datetime | None,
) -> int:
    """Queue one SMS to a subscriber's number (in the caller's transaction, if any); returns
    the notice's alert id."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown notice purpose {purpose!r}")
    notice_id: int = await conn.fetchval(
        CREATE_NOTICE,
        text,
        PRIORITIES["high"],
        purpose,
        expires_at,
        subscriber_id,
        WAKEUP_CHANNEL,
    )
    return notice_id


async def blank_finished(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.execute(BLANK_FINISHED)
