"""Statistics of the programme (scope subscribers:read): subscribers by zone, sign-ups."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import Digits
from broadcaster.api.openapi import errors
from broadcaster.auth import ApiKey
from broadcaster.citizens import stats

router = APIRouter(tags=["stats"])

ZoneKind = Literal["police_district", "municipality", "postal_code", "custom"]


class ZoneCount(BaseModel):
    id: int
    kind: ZoneKind
    name: str
    code: str | None
    active: int


class SubscriberStats(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "by": "zone",
                    "zones": [
                        {
                            "id": 7,
                            "kind": "municipality",
                            "name": "Hillerød Kommune",
                            "code": "219",
                            "active": 1843,
                        },
                        {
                            "id": 14,
                            "kind": "police_district",
                            "name": "Nordsjællands Politi",
                            "code": "9",
                            "active": 5210,
                        },
                        {
                            "id": 67,
                            "kind": "custom",
                            "name": "Hillerød centrum",
                            "code": None,
                            "active": 412,
                        },
                    ],
                }
            ]
        }
    )
    by: Literal["zone", "postal_code"]
    zones: list[ZoneCount]


class WeekCount(BaseModel):
    week: date
    confirmed: int


class SignupStats(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "weeks": 2,
                    "per_week": [
                        {"week": "2026-11-23", "confirmed": 37},
                        {"week": "2026-11-30", "confirmed": 52},
                    ],
                    "reasons": {"help_community": 41, "feel_safer": 30, "stay_informed": 18},
                }
            ]
        }
    )
    weeks: int
    per_week: list[WeekCount]
    reasons: dict[str, int]


@router.get(
    "/v1/stats/subscribers",
    response_model=SubscriberStats,
    responses=errors(401, 403, 422, 503),
)
async def subscriber_stats(
    db: DbDep,
    _key: ApiKey = require("subscribers:read"),
    by: Annotated[
        Literal["zone", "postal_code"],
        Query(description="postal_code: per postal code; zone: per named zone of any kind"),
    ] = "zone",
    kind: Annotated[
        ZoneKind | None, Query(description="With by=zone: only zones of a kind")
    ] = None,
) -> dict[str, Any]:
    """Active subscribers per zone: a point inside it or registered by it, each counted once."""
    async with db.connection() as conn:
        rows = await stats.subscribers_by_zone(conn, "postal_code" if by == "postal_code" else kind)
    return {"by": by, "zones": rows}


@router.get("/v1/stats/signups", response_model=SignupStats, responses=errors(401, 403, 422, 503))
async def signup_stats(
    db: DbDep,
    _key: ApiKey = require("subscribers:read"),
    weeks: Annotated[int, Query(ge=1, le=520, description="How many weeks back"), Digits] = 12,
) -> dict[str, Any]:
    """Confirmed sign-ups per week and the reasons citizens gave."""
    async with db.connection() as conn:
        return await stats.signups(conn, weeks)
