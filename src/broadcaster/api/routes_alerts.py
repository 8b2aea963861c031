"""Alerts: create (idempotent), status, cancel."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import asyncpg
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from broadcaster.api import pagination
from broadcaster.api.area_schema import Area, PostalCodesArea, ZonesArea
from broadcaster.api.deps import DbDep, RequestId, SettingsDep, require
from broadcaster.api.fields import BIGINT_MAX, MAX_EXPIRY_AHEAD, CleanStr, Expiry
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
from broadcaster.ingest.geo import AreaError, parse_area
from broadcaster.ingest.sms import segment_count
from broadcaster.ingest.zones import UnknownZones, resolve_names, resolve_postal_codes
from broadcaster.ops import audit, metrics
from broadcaster.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["alerts"])

# Bounded at the edge; the real limit is BROADCASTER_MAX_SEGMENTS, checked in SMS segments.
MAX_MESSAGE_CHARS = 10_000


Message = Annotated[CleanStr, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]


class AlertIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "message": "Politiet: indbrud i området. Se noget? Ring 114.",
                    "area": {"type": "Circle", "center": [12.3111, 55.9267], "radius_m": 2500},
                    "priority": "high",
                    "reference": "case-2026-4711",
                }
            ]
        },
    )
    message: Message
    area: Area
    priority: Literal["emergency", "high", "normal"] = "normal"
    expires_at: Expiry | None = None
    reference: Annotated[CleanStr, Field(max_length=200)] | None = None
    tip_webhook: (
        Annotated[
            CleanStr,
            Field(
                max_length=2000,
                pattern=r"^https?://[^\s/?#]+[^\s]*$",
                description="The investigating system's URL: each tip citizens send in answer "
                "to this alert is POSTed there (JSON, signed: X-Broadcaster-Signature: "
                "sha256=<hex HMAC-SHA256 of the body>) until it answers 2xx. https only.",
                examples=["https://cases.example.police.dk/tips/4711"],
            ),
        ]
        | None
    ) = None

    texts: (
        Annotated[
            dict[Language, Message],
            Field(
                max_length=20,
                description="The text in other languages: a subscriber whose language is one of "
                "these gets it, everyone else `message` (Danish by convention)",
                examples=[{"en": "Police: burglaries in the area. Seen anything? Call 114."}],
            ),
        ]
        | None
    ) = None

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for language, text in (value or {}).items():
            if not text.strip():
                raise ValueError(f"the {language} text must not be blank")
        return value


class DeliveryCounts(BaseModel):
    queued: int
    sending: int
    sent: int
    delivered: int
    failed: int
    expired: int
    cancelled: int


AlertStatusName = Literal["queued", "dispatching", "completed", "expired", "cancelled"]
Priority = Literal["emergency", "high", "normal"]


class TipCounts(BaseModel):
    received: int = Field(description="Tips citizens sent in answer to the alert")
    forwarded: int = Field(description="Of those, acknowledged by the alert's tip_webhook")


class CapMessage(BaseModel):
    """For an alert that came as CAP 1.2: the message it came in (docs/cap.md)."""

    sender: str
    identifier: str
    status: Literal["Actual", "Exercise", "System", "Test", "Draft"] = Field(
        description="Anything but Actual is stored and never sent"
    )
    msg_type: Literal["Alert", "Update"]


class AlertStatus(BaseModel):
    """An alert, how far its deliveries have come, and the tips it brought."""

    id: int
    status: AlertStatusName
    priority: Priority
    reference: str | None
    expires_at: datetime | None
    created_at: datetime
    fanned_out_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    recipients: int | None = Field(description="Subscribers in the zone; null until fanned out")
    deliveries: DeliveryCounts
    tips: TipCounts
    tip_webhook: str | None
    cap: CapMessage | None = None


class CapCancelled(BaseModel):
    """The answer to a CAP Cancel: the alerts its references named, now cancelled."""

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
AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.post(
    "/v1/alerts",
    status_code=202,
    response_model=AlertStatus,
    responses={
        200: {"model": CapCancelled, "description": "A CAP 1.2 Cancel: the alerts it cancelled"},
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
    area = body.area.zone_input()
    zone = None
    if not isinstance(body.area, ZonesArea | PostalCodesArea):
        try:
            zone = parse_area(area)
        except AreaError as exc:
            raise Problem(422, "Invalid area", f"area: {exc}") from None
    check_texts(
        [("message", body.message)]
        + [(f"texts.{language}", text) for language, text in (body.texts or {}).items()],
        settings,
    )
    check_expiry(body.expires_at, "expires_at")
    if body.tip_webhook is not None:
        check_tip_webhook(body.tip_webhook, settings)
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
                tip_webhook=body.tip_webhook,
                targets=targets,
                texts=body.texts or {},
            )
            alert_id, created, status = await store_alert(
                conn, alert, key, request_id, idempotency_key
            )
    except IdempotencyConflict as exc:
        raise Problem(422, "Idempotency-Key reused", str(exc)) from None
    return created_answer(alert_id, created, status, body.priority)


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
            await audit.record(
                conn,
                key.name,
                audit.ALERT_CREATED,
                f"alert:{alert_id}",
                request_id,
                {"priority": alert.priority, "reference": alert.reference},
            )
            if after_create is not None:
                await after_create(conn, alert_id)
    status = await alert_status(conn, alert_id)
    assert status is not None  # alerts are never deleted
    return alert_id, created, status


def created_answer(
    alert_id: int, created: bool, status: dict[str, Any], priority: str
) -> JSONResponse:
    """202 with the alert's status and Location (Idempotent-Replayed on a repeat)."""
    if created:
        metrics.ALERTS_CREATED.labels(priority).inc()
        log.info("alert created", extra={"alert_id": alert_id, "priority": priority})
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


def check_tip_webhook(url: str, settings: Settings) -> None:
    """A tip_webhook must be an https URL with a host (http only where the settings allow it),
    and tips must be signable (BROADCASTER_WEBHOOK_SECRET); Problem 422 otherwise."""
    schemes = ("https", "http") if settings.tip_webhook_allow_http else ("https",)
    try:
        parts = urlsplit(url)
        usable = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not one, a malformed IPv6 address
        usable = False
    if not usable:
        raise Problem(422, "Invalid request", "tip_webhook: must be an https URL with a host")
    if not settings.webhook_secret:
        raise Problem(
            422,
            "Tip forwarding not set up",
            "tip_webhook: this service has no BROADCASTER_WEBHOOK_SECRET to sign tips with",
        )


class AlertSummary(BaseModel):
    """An alert in a list (its delivery counts are in GET /v1/alerts/{id})."""

    id: int
    status: AlertStatusName
    priority: Priority
    reference: str | None
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


@router.get(
    "/v1/alerts/{alert_id}", response_model=AlertStatus, responses=errors(401, 403, 404, 422, 503)
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
