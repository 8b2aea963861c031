"""Named zones: create or update them from GeoJSON, list them, read one."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

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


@router.post(
    "/v1/zones",
    responses={
        201: {"description": "At least one zone was created"},
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


@router.get("/v1/zones", responses=errors(422))
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


@router.get("/v1/zones/{zone_id}", responses=errors(404, 422))
async def get_one_zone(
    zone_id: ZoneId, db: DbDep, _key: ApiKey = require(ZONES_READ_SCOPE)
) -> dict[str, Any]:
    """The zone as a GeoJSON Feature."""
    async with db.connection() as conn:
        zone = await get_zone(conn, zone_id)
    if zone is None:
        raise Problem(404, "Not found", f"no zone with id {zone_id}")
    return zone
