"""Tips: what citizens answered to an alert, newest first, a page at a time (citizens/tips.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api import pagination
from broadcaster.api.deps import DbDep, require
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.api.routes_alerts import AlertId
from broadcaster.auth import ApiKey
from broadcaster.citizens.tips import alert_tips

router = APIRouter(tags=["tips"])


class Tip(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 318,
                    "received_at": "2026-12-07T20:21:33.402000Z",
                    "text": "Så en hvid varevogn uden nummerplader ved Slotsgade kl. 20",
                    "sender": "+45 20 ** ** 56",
                }
            ]
        }
    )
    id: int
    received_at: datetime
    text: str = Field(examples=["Saw a blue van by the station at 9:40"])
    sender: str | None = Field(
        description="The sender's number masked (country code, first and last two digits); "
        "null once erased or past retention",
        examples=["+45 20 ** ** 56"],
    )


@router.get(
    "/v1/alerts/{alert_id}/tips",
    response_model=pagination.Page[Tip],
    responses=errors(401, 403, 404, 422, 503),
)
async def get_tips(
    alert_id: AlertId,
    db: DbDep,
    _key: ApiKey = require("tips:read"),
    limit: pagination.Limit = 50,
    cursor: pagination.Cursor = None,
) -> dict[str, Any]:
    """The tips citizens sent in answer to the alert, newest first, a page at a time."""
    before = pagination.decode(cursor)
    async with db.connection() as conn:
        rows = await alert_tips(conn, alert_id, before, limit + 1)
    if rows is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    return pagination.page(rows, [r["id"] for r in rows], limit)
