"""Alerts: create (idempotent), status, cancel."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from broadcaster import metrics
from broadcaster.alerts import (
    IdempotencyConflict,
    NewAlert,
    NotCancellable,
    alert_status,
    cancel_alert,
    create_alert,
)
from broadcaster.api.deps import PoolDep, SettingsDep, require
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.geo import AreaError, parse_area
from broadcaster.sms import segment_count

log = logging.getLogger(__name__)

router = APIRouter(tags=["alerts"])


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1)
    area: dict[str, Any]
    priority: Literal["emergency", "high", "normal"] = "normal"
    expires_at: AwareDatetime | None = None
    reference: str | None = Field(None, max_length=200)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


@router.post("/v1/alerts", status_code=202, tags=["alerts"])
async def post_alert(
    body: AlertIn,
    pool: PoolDep,
    settings: SettingsDep,
    key: ApiKey = require("alerts:write"),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    try:
        zone = parse_area(body.area)
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
    alert = NewAlert(body.message, body.area, zone, body.priority, body.expires_at, body.reference)
    try:
        async with pool.acquire() as conn:
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


@router.get("/v1/alerts/{alert_id}", tags=["alerts"])
async def get_alert(
    alert_id: int, pool: PoolDep, _key: ApiKey = require("alerts:read")
) -> dict[str, Any]:
    status = await alert_status(pool, alert_id)
    if status is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    return status


@router.post("/v1/alerts/{alert_id}/cancel", tags=["alerts"])
async def cancel(
    alert_id: int, pool: PoolDep, _key: ApiKey = require("alerts:write")
) -> dict[str, Any]:
    try:
        async with pool.acquire() as conn:
            found = await cancel_alert(conn, alert_id)
            status = await alert_status(conn, alert_id)
    except NotCancellable as exc:
        raise Problem(409, "Not cancellable", str(exc)) from None
    if not found or status is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    log.info("alert cancelled", extra={"alert_id": alert_id})
    return status
