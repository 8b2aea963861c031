"""Subscribers registered by other systems (with the scope subscribers:write), with points or
postal codes as their places."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import CleanStr, PhoneInput, PostalCode
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest.geo import SCALE
from broadcaster.ingest.zones import UnknownZones, resolve_postal_codes
from broadcaster.phone import PhoneError, normalise

router = APIRouter(tags=["subscribers"])

Label = Annotated[CleanStr, Field(max_length=50)]


class Location(BaseModel):
    """A point: the subscriber is reached by alerts whose area contains it."""

    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    label: Label | None = None


class PostalCodeLocation(BaseModel):
    """A postal code instead of a point: the subscriber is reached by alerts for the postal
    code and by those whose area reaches into it (see the README)."""

    model_config = ConfigDict(extra="forbid")
    postal_code: PostalCode
    label: Label | None = None


def _location_kind(value: Any) -> str:
    if isinstance(value, PostalCodeLocation) or (
        isinstance(value, dict) and "postal_code" in value
    ):
        return "PostalCode"
    return "Point"


AnyLocation = Annotated[
    Annotated[Location, Tag("Point")] | Annotated[PostalCodeLocation, Tag("PostalCode")],
    Discriminator(_location_kind),
]


class SubscriberIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "phone": "20 12 34 56",
                    "language": "da",
                    "locations": [
                        {"lat": 55.93, "lon": 12.30, "label": "home"},
                        {"postal_code": "3480", "label": "parents"},
                    ],
                }
            ]
        },
    )
    phone: PhoneInput
    locations: list[AnyLocation] = Field(min_length=1, max_length=10)
    language: str = Field("da", pattern=r"^[a-z]{2}$")
    status: Literal["active", "pending"] = "active"


@router.post("/v1/subscribers", status_code=201, tags=["subscribers"])
async def create_subscriber(
    body: SubscriberIn, db: DbDep, _key: ApiKey = require("subscribers:write")
) -> dict[str, Any]:
    try:
        phone = normalise(body.phone)
    except PhoneError as exc:
        raise Problem(422, "Invalid phone number", f"phone: {exc}") from None
    points = [loc for loc in body.locations if isinstance(loc, Location)]
    postal = [loc for loc in body.locations if isinstance(loc, PostalCodeLocation)]
    async with db.connection() as conn, conn.transaction():
        zone_ids = await _postal_zones(conn, body.locations) if postal else {}
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
            [loc.label for loc in points],
            [loc.lon for loc in points],
            [loc.lat for loc in points],
            SCALE,
        )
        if postal:
            # A postal code given twice is one place; the first label is kept.
            await conn.execute(
                """INSERT INTO subscriber_zones (subscriber_id, zone_id, label)
                   SELECT $1, z.zone_id, z.label
                   FROM unnest($2::bigint[], $3::text[]) AS z(zone_id, label)
                   ON CONFLICT DO NOTHING""",
                sub_id,
                [zone_ids[loc.postal_code] for loc in postal],
                [loc.label for loc in postal],
            )
    return {
        "id": sub_id,
        "phone": phone,
        "language": body.language,
        "status": body.status,
        "locations": [loc.model_dump() for loc in body.locations],
    }


async def _postal_zones(conn: Any, locations: list[Any]) -> dict[str, int]:
    """{postal code: zone id}; 422 naming the first location with an unknown code."""
    codes = [loc.postal_code for loc in locations if isinstance(loc, PostalCodeLocation)]
    try:
        return await resolve_postal_codes(conn, codes)
    except UnknownZones as exc:
        first = next(
            i
            for i, loc in enumerate(locations)
            if isinstance(loc, PostalCodeLocation) and loc.postal_code in exc.missing
        )
        raise Problem(
            422,
            "Unknown postal code",
            f"locations[{first}].postal_code: {exc}",
            unknown=exc.missing,
        ) from None
