"""Alerts: create (idempotent), status, cancel."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from broadcaster.api import pagination
from broadcaster.api.alert_schema import AlertIn, build_alert
from broadcaster.api.deps import DbDep, RequestId, SettingsDep, require
from broadcaster.api.fields import BIGINT_MAX
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest.alerts import (
    IdempotencyConflict,
    NotCancellable,
    alert_status,
    cancel_alert,
    create_alert,
    list_alerts,
)
from broadcaster.ops import audit, metrics

log = logging.getLogger(__name__)

router = APIRouter(tags=["alerts"])


class DeliveryCounts(BaseModel):
    queued: int
    sending: int
    sent: int
    delivered: int
    failed: int
    expired: int
    cancelled: int


AlertStatusName = Literal["scheduled", "queued", "dispatching", "completed", "expired", "cancelled"]
Priority = Literal["emergency", "high", "normal"]


class TipCounts(BaseModel):
    received: int = Field(description="Tips citizens sent in answer to the alert")
    forwarded: int = Field(description="Of those, acknowledged by the alert's tip_webhook")


class AlertStatus(BaseModel):
    """An alert, how far its deliveries have come, and the tips it brought."""

    id: int
    status: AlertStatusName
    priority: Priority
    reference: str | None
    send_at: datetime | None = Field(description="When the caller asked it to be sent")
    not_before: datetime | None = Field(
        description="When sending may start: send_at, or the end of the quiet hours it fell in "
        "(status 'scheduled' until then); null: at once"
    )
    expires_at: datetime | None
    created_at: datetime
    fanned_out_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    recipients: int | None = Field(description="Subscribers in the zone; null until fanned out")
    deliveries: DeliveryCounts
    tips: TipCounts
    tip_webhook: str | None
    status_webhook: str | None = None
    outcome_queued_at: datetime | None = Field(
        None, description="When the outcome was put in line for status_webhook (it has ended)"
    )


# Printable ASCII, as HTTP header values are meant to be.
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[ -~]+$")]
AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.post(
    "/v1/alerts",
    status_code=202,
    response_model=AlertStatus,
    responses=errors(400, 401, 403, 413, 422, 503),
)
async def post_alert(
    body: AlertIn,
    db: DbDep,
    settings: SettingsDep,
    request_id: RequestId,
    key: ApiKey = require("alerts:write"),
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    try:
        async with db.connection() as conn:
            alert, _start = await build_alert(conn, body, settings)
            async with conn.transaction():
                alert_id, created = await create_alert(conn, alert, key.id, idempotency_key)
                if created:
                    details: dict[str, Any] = {
                        "priority": body.priority,
                        "reference": body.reference,
                    }
                    if alert.template is not None:
                        details["template"] = alert.template
                    await audit.record(
                        conn,
                        key.name,
                        audit.ALERT_CREATED,
                        f"alert:{alert_id}",
                        request_id,
                        details,
                    )
            status = await alert_status(conn, alert_id)
    except IdempotencyConflict as exc:
        raise Problem(422, "Idempotency-Key reused", str(exc)) from None
    if created:
        metrics.ALERTS_CREATED.labels(body.priority, "json").inc()
        log.info("alert created", extra={"alert_id": alert_id, "priority": body.priority})
    headers = {"Location": f"/v1/alerts/{alert_id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status, status_code=202, headers=headers)


class AlertSummary(BaseModel):
    """An alert in a list (its delivery counts are in GET /v1/alerts/{id})."""

    id: int
    status: AlertStatusName
    priority: Priority
    reference: str | None
    send_at: datetime | None = Field(description="When the caller asked it to be sent")
    not_before: datetime | None = Field(
        description="When sending may start: send_at, or the end of the quiet hours it fell in "
        "(status 'scheduled' until then); null: at once"
    )
    expires_at: datetime | None
    created_at: datetime
    fanned_out_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    recipients: int | None


@router.get(
    "/v1/alerts", response_model=pagination.Page[AlertSummary], responses=errors(401, 403, 422, 503)
)
async def get_alerts(
    db: DbDep,
    _key: ApiKey = require("alerts:read"),
    status: Annotated[list[AlertStatusName] | None, Query(description="Any of these")] = None,
    limit: pagination.Limit = 50,
    cursor: pagination.Cursor = None,
) -> dict[str, Any]:
    """Alerts, newest first, a page at a time."""
    before = pagination.decode(cursor)
    async with db.connection() as conn:
        rows = await list_alerts(conn, before, list(status or []), limit + 1)
    return pagination.page(rows, [r["id"] for r in rows], limit)


class AlertIdSegment(Convertor[str]):
    """An alert id in a path: any segment but `preview`, so that /v1/alerts/preview is no alert
    id (its GET and OPTIONS are 405 naming POST alone). The route still validates the value as
    an id: 422 for "-1" or "1e3", as before."""

    regex = r"(?!preview(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("alert_id", AlertIdSegment())


@router.get(
    "/v1/alerts/{alert_id:alert_id}",
    response_model=AlertStatus,
    responses=errors(401, 403, 404, 422, 503),
)
async def get_alert(
    alert_id: AlertId, db: DbDep, _key: ApiKey = require("alerts:read")
) -> dict[str, Any]:
    async with db.connection() as conn:
        status = await alert_status(conn, alert_id)
    if status is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    return status


@router.post(
    "/v1/alerts/{alert_id}/cancel",
    response_model=AlertStatus,
    responses=errors(401, 403, 404, 409, 413, 422, 503),
)
async def cancel(
    alert_id: AlertId, db: DbDep, request_id: RequestId, key: ApiKey = require("alerts:write")
) -> dict[str, Any]:
    try:
        async with db.connection() as conn:
            async with conn.transaction():
                found = await cancel_alert(conn, alert_id)
                if found:
                    await audit.record(
                        conn, key.name, audit.ALERT_CANCELLED, f"alert:{alert_id}", request_id
                    )
            status = await alert_status(conn, alert_id)
    except NotCancellable as exc:
        raise Problem(409, "Not cancellable", str(exc)) from None
    if not found or status is None:
        raise Problem(404, "Not found", f"no alert with id {alert_id}")
    log.info("alert cancelled", extra={"alert_id": alert_id})
    return status
