"""Named zones: create or update them from GeoJSON, list them, read one."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.area_schema import HILLEROD
from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import BIGINT_MAX, Digits
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.api.zone_schema import Kind, Zones, zone_inputs
from broadcaster.auth import ApiKey
from broadcaster.ingest.zones import BadCursor, ZoneError, get_zone, list_zones, prepare, store

log = logging.getLogger(__name__)

router = APIRouter(tags=["zones"])

# Who may read and write zones: one constant each, so that the scope can change in one place
# (writing is meant to become `admin`).
ZONES_READ_SCOPE = "alerts:read"
ZONES_WRITE_SCOPE = "alerts:write"
# Features in one request; larger sets go through `broadcaster import-zones`.
MAX_FEATURES = 1000

ZoneId = Annotated[int, Path(ge=1, le=BIGINT_MAX), Digits]
ZONES_EXAMPLE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "Hillerød centrum", "kind": "custom"},
            "geometry": {"type": "Polygon", "coordinates": [HILLEROD]},
        },
        {
            "type": "Feature",
            "properties": {"name": "3400 Hillerød", "kind": "postal_code", "code": "3400"},
            "geometry": {"type": "Polygon", "coordinates": [HILLEROD]},
        },
    ],
}
# Times as the zone routes have always written them (isoformat, +00:00).
Isoformat = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class ZoneWritten(BaseModel):
    id: int
    kind: Kind
    name: str
    code: str | None
    result: Literal["created", "updated", "unchanged", "kept"] = Field(
        description="`kept`: a shipped zone an operator changed, left as it is"
    )


class ZonesWritten(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "zones": [
                        {
                            "id": 67,
                            "kind": "custom",
                            "name": "Hillerød centrum",
                            "code": None,
                            "result": "created",
                        },
                        {
                            "id": 52,
                            "kind": "postal_code",
                            "name": "3400 Hillerød",
                            "code": "3400",
                            "result": "updated",
                        },
                    ]
                }
            ]
        }
    )
    zones: list[ZoneWritten]


class StoredZoneProperties(BaseModel):
    kind: Kind
    name: str
    code: str | None
    source: Literal["shipped", "api", "import"]
    created_at: Isoformat
    updated_at: Isoformat


class ZoneSummary(BaseModel):
    id: int
    kind: Kind
    name: str
    code: str | None
    source: Literal["shipped", "api", "import"]
    created_at: Isoformat
    updated_at: Isoformat


_SHIPPED = "2026-12-01T08:00:00.854380+00:00"


class ZoneList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "zones": [
                        {
                            "id": 7,
                            "kind": "municipality",
                            "name": "Hillerød Kommune",
                            "code": "219",
                            "source": "shipped",
                            "created_at": _SHIPPED,
                            "updated_at": _SHIPPED,
                        },
                        {
                            "id": 14,
                            "kind": "police_district",
                            "name": "Nordsjællands Politi",
                            "code": "9",
                            "source": "shipped",
                            "created_at": _SHIPPED,
                            "updated_at": _SHIPPED,
                        },
                    ],
                    "next_cursor": "ejE0",
                }
            ]
        }
    )
    zones: list[ZoneSummary]
    next_cursor: str | None


class ZoneGeometry(BaseModel):
    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any]


class ZoneOut(BaseModel):
    """A zone as a GeoJSON Feature (RFC 7946)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "Feature",
                    "id": 67,
                    "properties": {
                        "kind": "custom",
                        "name": "Hillerød centrum",
                        "code": None,
                        "source": "api",
                        "created_at": "2026-12-07T19:02:44.120981+00:00",
                        "updated_at": "2026-12-07T19:02:44.120981+00:00",
                    },
                    "geometry": {
                        "type": "MultiPolygon",
                        "coordinates": [
                            [
                                [
                                    [12.25, 55.9],
                                    [12.35, 55.9],
                                    [12.35, 55.95],
                                    [12.25, 55.95],
                                    [12.25, 55.9],
                                ]
                            ]
                        ],
                    },
                }
            ]
        }
    )
    type: Literal["Feature"]
    id: int
    properties: StoredZoneProperties
    geometry: ZoneGeometry


@router.post(
    "/v1/zones",
    response_model=ZonesWritten,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": ZONES_EXAMPLE}}}},
    responses={
        201: {"description": "At least one zone was created", "model": ZonesWritten},
        **errors(400, 409, 413, 422),
    },
)
async def post_zones(
    body: Zones, db: DbDep, _key: ApiKey = require(ZONES_WRITE_SCOPE)
) -> JSONResponse:
    """Create or update zones: a feature with a code is matched by kind and code, one without
    by kind and name. 201 when a zone was created, 200 otherwise."""
    inputs, where = zone_inputs(body)
    if len(inputs) > MAX_FEATURES:
        raise Problem(
            422,
            "Too many zones",
            f"features: at most {MAX_FEATURES} per request; import larger sets with "
            "'broadcaster import-zones'",
        )
    try:
        # Cutting polygons into pieces is CPU work: keep it off the event loop.
        prepared = await asyncio.to_thread(prepare, inputs, where)
    except ZoneError as exc:
        raise Problem(422, "Invalid zone", str(exc)) from None
    try:
        async with db.connection() as conn:
            stored = await store(conn, prepared, "api", where=where)
    except ZoneError as exc:
        raise Problem(409, "Zone name taken", str(exc)) from None
    created = sum(1 for s in stored if s.result == "created")
    log.info("zones written", extra={"zones": len(stored), "created": created})
    return JSONResponse(
        {"zones": [s.as_dict() for s in stored]}, status_code=201 if created else 200
    )


@router.get("/v1/zones", response_model=ZoneList, responses=errors(422))
async def get_zones(
    db: DbDep,
    kind: Kind | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000), Digits] = 100,
    _key: ApiKey = require(ZONES_READ_SCOPE),
) -> dict[str, Any]:
    """Zones in the order they were created, without geometry; `next_cursor` fetches the next
    page (null on the last)."""
    try:
        async with db.connection() as conn:
            return await list_zones(conn, kind, cursor, limit)
    except BadCursor as exc:
        raise Problem(422, "Invalid request", f"cursor: {exc}") from None


@router.get("/v1/zones/{zone_id}", response_model=ZoneOut, responses=errors(404, 422))
async def get_one_zone(
    zone_id: ZoneId, db: DbDep, _key: ApiKey = require(ZONES_READ_SCOPE)
) -> dict[str, Any]:
    """The zone as a GeoJSON Feature."""
    async with db.connection() as conn:
        zone = await get_zone(conn, zone_id)
    if zone is None:
        raise Problem(404, "Not found", f"no zone with id {zone_id}")
    return zone
