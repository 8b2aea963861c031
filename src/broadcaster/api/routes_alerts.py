"""Alerts: create (idempotent), status, cancel."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from broadcaster.api import pagination
from broadcaster.api.alert_schema import AlertIn, build_alert
from broadcaster.api.deps import DbDep, RequestId, SettingsDep, require
from broadcaster.api.fields import BIGINT_MAX, MAX_EXPIRY_AHEAD, Digits
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest.alerts import (
    IdempotencyConflict,
    NewAlert,
    NotCancellable,
    alert_status,
    cancel_alert,
    create_alert,
    list_alerts,
)
from broadcaster.ingest.cap import EXAMPLE as CAP_EXAMPLE
from broadcaster.ingest.cap import MEDIA_TYPE as CAP_MEDIA_TYPE
from broadcaster.ingest.sms import segment_count
from broadcaster.ops import audit, metrics
from broadcaster.settings import Settings

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


CapStatus = Literal["Actual", "Exercise", "System", "Test", "Draft"]


class CapMessageKept(BaseModel):
    """A CAP 1.2 message the service took, kept as received (docs/cap.md, "Messages kept")."""

    id: int = Field(description="GET /v1/cap/messages/{id} returns the document as received")
    identifier: str
    sender: str
    sent: datetime = Field(description="The message's <sent>")
    status: CapStatus
    msg_type: Literal["Alert", "Update", "Cancel"]
    references: list[str] = Field(description="sender,identifier,sent of each reference")
    received_at: datetime
    sha256: str = Field(description="SHA-256 of the document as received, in hex")


class CapMessageEffect(CapMessageKept):
    """A kept CAP message and what it did to the alert."""

    effect: Literal["created", "updated", "cancelled"] = Field(
        description="created: the Alert or Update the alert came in; updated: an Update that "
        "replaces it; cancelled: a Cancel that named it"
    )


class CapMessage(BaseModel):
    """For an alert that came as CAP 1.2: the message it came in, and every message that
    touched it (docs/cap.md)."""

    sender: str
    identifier: str
    sent: datetime | None = Field(
        description="The <sent> of the message it came in (null for an alert stored before "
        "messages were kept)"
    )
    status: CapStatus = Field(description="Anything but Actual is stored and never sent")
    msg_type: Literal["Alert", "Update"]
    messages: list[CapMessageEffect] = Field(
        description="The CAP messages that created, updated or cancelled it, oldest first"
    )


# What the API answered for a CAP alert and its Cancel (the examples below).
_CAP_KEPT: dict[str, Any] = {
    "id": 1,
    "identifier": "NSJP-2026-4711",
    "sender": "nsjp@politi.dk",
    "sent": "2026-12-07T19:00:00.000000+00:00",
    "status": "Actual",
    "msg_type": "Alert",
    "references": [],
    "received_at": "2026-12-07T19:00:01.959205+00:00",
    "sha256": "ca7a49dafcf8d252670fa2bf32860c68ef28936838170353bfc2f6bb46cf315d",
}
_CAP_CANCEL_KEPT: dict[str, Any] = {
    "id": 2,
    "identifier": "NSJP-2026-4712",
    "sender": "nsjp@politi.dk",
    "sent": "2026-12-07T19:40:00.000000+00:00",
    "status": "Actual",
    "msg_type": "Cancel",
    "references": ["nsjp@politi.dk,NSJP-2026-4711,2026-12-07T20:00:00+01:00"],
    "received_at": "2026-12-07T19:40:01.991315+00:00",
    "sha256": "d51e208a4a36fa2ac363b9afe12cdd54532e32e40923adffdb32d0b5e624d183",
}
_SUMMARY_EXAMPLE: dict[str, Any] = {
    "id": 4711,
    "status": "completed",
    "priority": "high",
    "reference": "FC-2026-4711",
    "send_at": None,
    "not_before": None,
    "expires_at": "2026-12-08T11:00:00Z",
    "created_at": "2026-12-07T19:00:01.943393Z",
    "fanned_out_at": "2026-12-07T19:00:02.211870Z",
    "completed_at": "2026-12-07T19:03:12.540112Z",
    "cancelled_at": None,
    "recipients": 1843,
}
_STATUS_EXAMPLE: dict[str, Any] = {
    **_SUMMARY_EXAMPLE,
    "deliveries": {
        "queued": 0,
        "sending": 0,
        "sent": 112,
        "delivered": 1722,
        "failed": 6,
        "expired": 3,
        "cancelled": 0,
    },
    "tips": {"received": 4, "forwarded": 4},
    "tip_webhook": "https://cases.example.police.dk/tips/4711",
    "status_webhook": "https://command.example.police.dk/alerts/4711/outcome",
    "outcome_queued_at": "2026-12-07T19:03:12.540112Z",
    "cap": None,
}
_CAP_CANCELLED_ALERT: dict[str, Any] = {
    **_STATUS_EXAMPLE,
    "id": 4712,
    "status": "cancelled",
    "priority": "high",
    "reference": "NSJP-2026-4711",
    "expires_at": None,
    "created_at": "2026-12-07T19:00:01.959205Z",
    "fanned_out_at": None,
    "completed_at": "2026-12-07T19:40:01.991315Z",
    "cancelled_at": "2026-12-07T19:40:01.991315Z",
    "recipients": None,
    "deliveries": dict.fromkeys(
        ("queued", "sending", "sent", "delivered", "failed", "expired", "cancelled"), 0
    ),
    "tips": {"received": 0, "forwarded": 0},
    "tip_webhook": None,
    "status_webhook": None,
    "outcome_queued_at": None,
    "cap": {
        "sender": "nsjp@politi.dk",
        "identifier": "NSJP-2026-4711",
        "sent": "2026-12-07T19:00:00.000000+00:00",
        "status": "Actual",
        "msg_type": "Alert",
        "messages": [
            {**_CAP_KEPT, "effect": "created"},
            {**_CAP_CANCEL_KEPT, "effect": "cancelled"},
        ],
    },
}


class AlertSummary(BaseModel):
    """An alert in a list (its delivery counts are in GET /v1/alerts/{id})."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SUMMARY_EXAMPLE]})

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


class AlertStatus(AlertSummary):
    """An alert, how far its deliveries have come, and the tips it brought."""

    model_config = ConfigDict(json_schema_extra={"examples": [_STATUS_EXAMPLE]})

    deliveries: DeliveryCounts
    tips: TipCounts
    tip_webhook: str | None
    status_webhook: str | None = None
    outcome_queued_at: datetime | None = Field(
        None, description="When the outcome was put in line for status_webhook (it has ended)"
    )
    cap: CapMessage | None = None


class CapCancelled(BaseModel):
    """The answer to a CAP Cancel: the message as kept, and the alerts its references named,
    now cancelled."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"message": _CAP_CANCEL_KEPT, "cancelled": [_CAP_CANCELLED_ALERT]}]
        }
    )

    message: CapMessageKept
    cancelled: list[AlertStatus]


# POST /v1/alerts also takes CAP 1.2 XML (routes_cap.py answers it; docs/cap.md).
CAP_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            CAP_MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "description": "An OASIS CAP 1.2 <alert> (namespace "
                    "urn:oasis:names:tc:emergency:cap:1.2); DTDs and entities are refused. "
                    "identifier and sender are the idempotency key; a Cancel is answered 200.",
                },
                "example": CAP_EXAMPLE,
            }
        }
    }
}

# Printable ASCII, as HTTP header values are meant to be.
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[ -~]+$")]
AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX), Digits]


@router.post(
    "/v1/alerts",
    status_code=202,
    response_model=AlertStatus,
    responses={
        200: {
            "model": CapCancelled,
            "description": "A CAP 1.2 Cancel: the message as kept and the alerts it cancelled",
        },
        **errors(400, 401, 403, 409, 413, 422, 503),
        400: {
            "description": "The body is not valid JSON, or not well-formed XML, or XML with a "
            "DTD, entity declarations or external references (refused, never expanded)"
        },
    },
    openapi_extra=CAP_REQUEST_BODY,
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
            alert_id, created, status = await store_alert(
                conn, alert, key, request_id, idempotency_key
            )
    except IdempotencyConflict as exc:
        raise Problem(422, "Idempotency-Key reused", str(exc)) from None
    return created_answer(alert_id, created, status, body.priority, "json")


def check_texts(texts: list[tuple[str, str]], settings: Settings) -> None:
    """Problem 422 naming the first text (where, text) over BROADCASTER_MAX_SEGMENTS."""
    for where, text in texts:
        segments = segment_count(text)
        if segments > settings.max_segments:
            raise Problem(
                422,
                "Message too long",
                f"{where} needs {segments} SMS segments; at most {settings.max_segments} are "
                "allowed",
                segments=segments,
                max_segments=settings.max_segments,
            )


def check_expiry(expires_at: datetime | None, where: str) -> None:
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise Problem(422, "Invalid request", f"{where}: must be in the future")
    if expires_at is not None and expires_at - datetime.now(UTC) > MAX_EXPIRY_AHEAD:
        raise Problem(
            422, "Invalid request", f"{where}: must be within {MAX_EXPIRY_AHEAD.days} days from now"
        )


AfterCreate = Callable[[asyncpg.Connection, int], Awaitable[None]]


async def store_alert(
    conn: asyncpg.Connection,
    alert: NewAlert,
    key: ApiKey,
    request_id: str,
    idempotency_key: str | None,
    after_create: AfterCreate | None = None,
) -> tuple[int, bool, dict[str, Any]]:
    """Create the alert (or find the one an idempotency key made) with its audit entry, and
    `after_create` in the same transaction: (id, created, status). Raises
    IdempotencyConflict."""
    async with conn.transaction():
        alert_id, created = await create_alert(conn, alert, key.id, idempotency_key)
        if created:
            details: dict[str, Any] = {"priority": alert.priority, "reference": alert.reference}
            if alert.template is not None:
                details["template"] = alert.template
            await audit.record(
                conn, key.name, audit.ALERT_CREATED, f"alert:{alert_id}", request_id, details
            )
            if after_create is not None:
                await after_create(conn, alert_id)
    status = await alert_status(conn, alert_id)
    assert status is not None  # alerts are never deleted
    return alert_id, created, status


def created_answer(
    alert_id: int, created: bool, status: dict[str, Any], priority: str, source: str
) -> JSONResponse:
    """202 with the alert's status and Location (Idempotent-Replayed on a repeat)."""
    if created:
        metrics.ALERTS_CREATED.labels(priority, source).inc()
        log.info("alert created", extra={"alert_id": alert_id, "priority": priority})
    headers = {"Location": f"/v1/alerts/{alert_id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status, status_code=202, headers=headers)


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
