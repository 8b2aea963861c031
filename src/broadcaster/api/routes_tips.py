"""Tips: what citizens answered to an alert, newest first, a page at a time (citizens/tips.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import BIGINT_MAX
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.api.routes_alerts import AlertId
from broadcaster.auth import ApiKey
from broadcaster.citizens.tips import alert_tips

router = APIRouter(tags=["tips"])


class Tip(BaseModel):
    id: int
    received_at: datetime
    text: str
    sender: str | None = Field(
        description="The sender's number masked (country code, first and last two digits); "
        "null once erased",
        examples=["+45 12 ** ** 78"],
    )


class TipsPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tips": [
                        {
                            "id": 812,
                            "received_at": "2026-11-24T10:02:11+00:00",
                            "text": "Saw a blue van by the station at 9:40",
                            "sender": "+45 20 ** ** 56",
                        }
                    ],
                    "next_cursor": "812",
                }
            ]
        }
    )
    tips: list[Tip]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page"
    )


Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{1,19}$",
        description="`next_cursor` of the page before (opaque); absent for the newest tips",
    ),
]
Limit = Annotated[int, Query(ge=1, le=200, description="Tips per page")]


@router.get(
    "/v1/alerts/{alert_id}/tips",
    response_model=TipsPage,
    responses=errors(401, 403, 404, 422, 503),
)
async def get_tips(
    alert_id: AlertId,
    db: DbDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    _key: ApiKey = require("tips:read"),
) -> dict[str, Any]:
    """The tips citizens sent in answer to the alert, newest first."""
    before = None if cursor is None else int(cursor)
    if before is not None and before > BIGINT_MAX:
        raise Problem(422, "Invalid request", "cursor: not a cursor this API gave")
    async with db.connection() as conn:
        page = await alert_tips(conn, alert_id, before, limit)
    if page is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    return page
