"""Subscribers registered by other systems (with the scope subscribers:write)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import CleanStr, Coordinate, PhoneInput
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest.geo import SCALE
from broadcaster.phone import PhoneError, normalise

router = APIRouter(tags=["subscribers"])


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: Annotated[Coordinate, Field(ge=-90, le=90)]
    lon: Annotated[Coordinate, Field(ge=-180, le=180)]
    label: Annotated[CleanStr, Field(max_length=50)] | None = None


class SubscriberIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "phone": "20 12 34 56",
                    "language": "da",
                    "locations": [{"lat": 55.93, "lon": 12.30, "label": "home"}],
                }
            ]
        },
    )
    phone: PhoneInput
    locations: list[Location] = Field(min_length=1, max_length=10)
    language: str = Field("da", pattern=r"^[a-z]{2}$")
    status: Literal["active", "pending"] = "active"


class SubscriberOut(BaseModel):
    id: int
    phone: str = Field(examples=["+4520123456"], description="E.164")
    language: str
    status: Literal["active", "pending"]
    locations: list[Location]


@router.post(
    "/v1/subscribers",
    status_code=201,
    response_model=SubscriberOut,
    responses=errors(400, 401, 403, 409, 413, 422, 503),
)
async def create_subscriber(
    body: SubscriberIn, db: DbDep, _key: ApiKey = require("subscribers:write")
) -> dict[str, Any]:
    try:
        phone = normalise(body.phone)
    except PhoneError as exc:
        raise Problem(422, "Invalid phone number", f"phone: {exc}") from None
    async with db.connection() as conn, conn.transaction():
        sub_id = await conn.fetchval(
            """INSERT INTO subscribers (phone, language, status) VALUES ($1, $2, $3)
               ON CONFLICT (phone) DO NOTHING RETURNING id""",
            phone,
            body.language,
            body.status,
        )
        if sub_id is None:
            raise Problem(
                409, "Already registered", "a subscriber with this phone number already exists"
            )
        await conn.execute(
            """INSERT INTO subscriber_locations (subscriber_id, label, position)
               SELECT $1, l.label, point(l.lon * $5, l.lat * $5)
               FROM unnest($2::text[], $3::float8[], $4::float8[]) AS l(label, lon, lat)""",
            sub_id,
            [loc.label for loc in body.locations],
            [loc.lon for loc in body.locations],
            [loc.lat for loc in body.locations],
            SCALE,
        )
    return {
        "id": sub_id,
        "phone": phone,
        "language": body.language,
        "status": body.status,
        "locations": [loc.model_dump() for loc in body.locations],
    }
