"""The audit log: who (the API key's name, or the command line), when, what, with which request.

Append-only (a trigger refuses updates and deletes). Subjects name things by id, never by phone
number: the log must not keep what an erasure removes.
"""

from __future__ import annotations

from typing import Any

import asyncpg

ALERT_CREATED = "alert.created"
ALERT_CANCELLED = "alert.cancelled"
SUBSCRIBER_ERASED = "subscriber.erased"
KEY_CREATED = "api_key.created"
KEY_REVOKED = "api_key.revoked"
TEMPLATE_STORED = "template.stored"
ACTIONS = (
    ALERT_CREATED,
    ALERT_CANCELLED,
    SUBSCRIBER_ERASED,
    KEY_CREATED,
    KEY_REVOKED,
    TEMPLATE_STORED,
)

RECORD = """
INSERT INTO audit_log (actor, action, subject, request_id, details) VALUES ($1, $2, $3, $4, $5)
"""


async def record(
    conn: asyncpg.Connection | asyncpg.Pool,
    actor: str,
    action: str,
    subject: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    await conn.execute(RECORD, actor, action, subject, request_id, details or {})
