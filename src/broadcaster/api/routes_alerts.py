"""Alerts: create (idempotent), status, cancel."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from broadcaster.api.area_schema import Area, PostalCodesArea, ZonesArea
from broadcaster.api.deps import DbDep, SettingsDep, require
from broadcaster.api.fields import BIGINT_MAX, CleanStr, Expiry
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest.alerts import (
    IdempotencyConflict,
    NewAlert,
    NotCancellable,
    alert_status,
    cancel_alert,
    create_alert,
)
from broadcaster.ingest.geo import AreaError, parse_area
from broadcaster.ingest.sms import segment_count
from broadcaster.ingest.zones import UnknownZones, resolve_names, resolve_postal_codes
from broadcaster.ops import metrics

log = logging.getLogger(__name__)

router = APIRouter(tags=["alerts"])

# Bounded at the edge; the real limit is BROADCASTER_MAX_SEGMENTS, checked in SMS segments.
MAX_MESSAGE_CHARS = 10_000


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[CleanStr, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    area: Area
    priority: Literal["emergency", "high", "normal"] = "normal"
    expires_at: Expiry | None = None
    reference: Annotated[CleanStr, Field(max_length=200)] | None = None

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


# Printable ASCII, as HTTP header values are meant to be.
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[ -~]+$")]
AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.post("/v1/alerts", status_code=202, tags=["alerts"])
async def post_alert(
    body: AlertIn,
    db: DbDep,
    settings: SettingsDep,
    key: ApiKey = require("alerts:write"),
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    area = body.area.zone_input()
    zone = None
    if not isinstance(body.area, ZonesArea | PostalCodesArea):
        try:
            zone = parse_area(area)
        except AreaError as exc:
            raise Problem(422, "Invalid area", f"area: {exc}") from None
    segments = segment_count(body.message)
    if segments > settings.max_segments:
        raise Problem(
            422,
            "Message too long",
            f"message needs {segments} SMS segments; at most {settings.max_segments} are allowed",
        )
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise Problem(422, "Invalid request", "expires_at: must be in the future")
    try:
        async with db.connection() as conn:
            targets = () if zone is not None else await _targets(conn, body.area)
            alert = NewAlert(
                body.message,
                area,
                zone,
                body.priority,
                body.expires_at,
                body.reference,
                targets,
            )
            alert_id, created = await create_alert(conn, alert, key.id, idempotency_key)
            status = await alert_status(conn, alert_id)
    except IdempotencyConflict as exc:
        raise Problem(422, "Idempotency-Key reused", str(exc)) from None
    if created:
        metrics.ALERTS_CREATED.labels(body.priority).inc()
        log.info("alert created", extra={"alert_id": alert_id, "priority": body.priority})
    headers = {"Location": f"/v1/alerts/{alert_id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status, status_code=202, headers=headers)


async def _targets(conn: Any, area: Any) -> tuple[int, ...]:
    """The ids of the zones a named area names; 422 naming those that name none."""
    try:
        if isinstance(area, ZonesArea):
            return tuple(await resolve_names(conn, area.zones))
        codes = await resolve_postal_codes(conn, area.postal_codes)
        return tuple(dict.fromkeys(codes[c] for c in area.postal_codes))
    except UnknownZones as exc:
        where = "area.zones" if isinstance(area, ZonesArea) else "area.postal_codes"
        raise Problem(422, "Unknown zone", f"{where}: {exc}", unknown=exc.missing) from None


@router.get("/v1/alerts/{alert_id}", tags=["alerts"])
async def get_alert(
    alert_id: AlertId, db: DbDep, _key: ApiKey = require("alerts:read")
) -> dict[str, Any]:
    async with db.connection() as conn:
        status = await alert_status(conn, alert_id)
    if status is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    return status


@router.post("/v1/alerts/{alert_id}/cancel", tags=["alerts"])
async def cancel(
    alert_id: AlertId, db: DbDep, _key: ApiKey = require("alerts:write")
) -> dict[str, Any]:
    try:
        async with db.connection() as conn:
            found = await cancel_alert(conn, alert_id)
            status = await alert_status(conn, alert_id)
    except NotCancellable as exc:
        raise Problem(409, "Not cancellable", str(exc)) from None
    if not found or status is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    log.info("alert cancelled", extra={"alert_id": alert_id})
    return status
