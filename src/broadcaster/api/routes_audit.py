"""The audit log (scope admin): who did what and when, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from broadcaster.api import pagination
from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import Timestamp
from broadcaster.api.openapi import errors
from broadcaster.auth import ApiKey

router = APIRouter(tags=["audit"])

Action = Literal[
    "alert.created",
    "alert.cancelled",
    "subscriber.erased",
    "api_key.created",
    "api_key.revoked",
    "template.stored",
]

LIST = """
SELECT id, at, actor, action, subject, request_id, details FROM audit_log
WHERE id < $1
  AND ($2::timestamptz IS NULL OR at >= $2) AND ($3::timestamptz IS NULL OR at < $3)
  AND (cardinality($4::text[]) = 0 OR action = ANY($4::text[]))
ORDER BY id DESC
LIMIT $5
"""


class AuditEntry(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 6,
                    "at": "2026-12-07T19:40:01.991315Z",
                    "actor": "kommandocentral",
                    "action": "alert.cancelled",
                    "subject": "alert:4712",
                    "request_id": "501659b7ef394783959aa81e301e65e6",
                    "details": {"cap": "NSJP-2026-4712", "cap_message": 2},
                },
                {
                    "id": 3,
                    "at": "2026-12-07T19:00:01.943393Z",
                    "actor": "kommandocentral",
                    "action": "alert.created",
                    "subject": "alert:4711",
                    "request_id": "1ab3fc1c8f674500b712231f31419abb",
                    "details": {"priority": "high", "reference": "FC-2026-4711"},
                },
            ]
        }
    )
    id: int
    at: datetime
    actor: str
    action: Action
    subject: str | None
    request_id: str | None
    details: dict[str, Any]


@router.get(
    "/v1/audit",
    response_model=pagination.Page[AuditEntry],
    responses=errors(401, 403, 422, 503),
)
async def get_audit(
    db: DbDep,
    _key: ApiKey = require("admin"),
    since: Annotated[Timestamp | None, Query(description="At or after this time")] = None,
    until: Annotated[Timestamp | None, Query(description="Before this time")] = None,
    action: Annotated[list[Action] | None, Query(description="Any of these")] = None,
    limit: pagination.Limit = 50,
    cursor: pagination.Cursor = None,
) -> dict[str, Any]:
    """Audited actions, newest first, a page at a time."""
    before = pagination.decode(cursor)
    async with db.connection() as conn:
        rows = await conn.fetch(LIST, before, since, until, list(action or []), limit + 1)
    return pagination.page([dict(r) for r in rows], [r["id"] for r in rows], limit)
