"""Alerts: create (idempotent), status, cancel."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broadcaster.api import pagination
from broadcaster.api.area_schema import Area, PostalCodesArea, ZonesArea
from broadcaster.api.deps import DbDep, RequestId, SettingsDep, require
from broadcaster.api.fields import BIGINT_MAX, CleanStr, Expiry
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest import templates
from broadcaster.ingest.alerts import (
    IdempotencyConflict,
    NewAlert,
    NotCancellable,
    alert_status,
    cancel_alert,
    create_alert,
    list_alerts,
)
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


TemplateValue = Annotated[CleanStr, Field(min_length=1, max_length=templates.MAX_VALUE_LENGTH)]


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
                },
                {
                    "template": "burglary_warning",
                    "values": {"area": "Hillerød"},
                    "area": {"type": "Circle", "center": [12.3111, 55.9267], "radius_m": 2500},
                },
            ]
        },
    )
    message: (
        Annotated[
            Message,
            Field(description="The text (Danish by convention); or give `template` instead"),
        ]
        | None
    ) = None
    template: (
        Annotated[
            str,
            Field(
                pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$",
                description="Instead of `message` and `texts`: a template (POST /v1/templates), "
                "rendered now in each of its languages with `values`",
                examples=["burglary_warning"],
            ),
        ]
        | None
    ) = None
    values: (
        Annotated[
            dict[Annotated[str, Field(max_length=40)], TemplateValue],
            Field(
                max_length=50,
                description="The template's placeholders' values, each of them, no others",
                examples=[{"area": "Hillerød"}],
            ),
        ]
        | None
    ) = None
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

    status_webhook: (
        Annotated[
            CleanStr,
            Field(
                max_length=2000,
                pattern=r"^https?://[^\s/?#]+[^\s]*$",
                description="The calling system's URL: once the alert has ended (completed, "
                "cancelled or expired, and its receipts in or BROADCASTER_OUTCOME_RECEIPT_WAIT_"
                "SECONDS past), its counts are POSTed there once (JSON, signed like tips: "
                "X-Broadcaster-Signature: sha256=<hex HMAC-SHA256 of the body>; "
                "X-Broadcaster-Event: alert.completed, alert.cancelled or alert.expired) until "
                "it answers 2xx. https only.",
                examples=["https://command.example.police.dk/alerts/4711/outcome"],
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
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("message must not be blank")
        return value

    @model_validator(mode="after")
    def _message_or_template(self) -> AlertIn:
        if (self.message is None) == (self.template is None):
            raise ValueError("give either message or template")
        if self.template is not None and self.texts is not None:
            raise ValueError("texts come from the template: give texts only with message")
        if self.template is None and self.values is not None:
            raise ValueError("values are for a template: give them only with template")
        return self

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
            alert = await prepare_alert(conn, body, settings)
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
        metrics.ALERTS_CREATED.labels(body.priority).inc()
        log.info("alert created", extra={"alert_id": alert_id, "priority": body.priority})
    headers = {"Location": f"/v1/alerts/{alert_id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status, status_code=202, headers=headers)


async def prepare_alert(conn: Any, body: AlertIn, settings: Settings) -> NewAlert:
    """The alert a request body asks for, checked: its area (a zone, or named zones and postal
    codes that exist), its texts (a template rendered in each of its languages, or the message
    and texts given) each within max_segments, its expiry and webhooks. Problem 422 naming the
    field otherwise. Writes nothing: creating and previewing an alert both start here."""
    area = body.area.zone_input()
    zone = None
    if not isinstance(body.area, ZonesArea | PostalCodesArea):
        try:
            zone = parse_area(area)
        except AreaError as exc:
            raise Problem(422, "Invalid area", f"area: {exc}") from None
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise Problem(422, "Invalid request", "expires_at: must be in the future")
    for field_name, url in [
        ("tip_webhook", body.tip_webhook),
        ("status_webhook", body.status_webhook),
    ]:
        if url is not None:
            check_webhook(field_name, url, settings)
    used = None
    if body.template is not None:
        message, texts, used = await _render(conn, body.template, body.values or {})
    else:
        assert body.message is not None  # AlertIn's validator
        message, texts = body.message, dict(body.texts or {})
    origin = f" (template {body.template!r})" if body.template is not None else ""
    for where, text in [("message", message)] + [(f"texts.{k}", t) for k, t in texts.items()]:
        segments = segment_count(text)
        if segments > settings.max_segments:
            raise Problem(
                422,
                "Message too long",
                f"{where}{origin} needs {segments} SMS segments; at most {settings.max_segments} "
                "are allowed",
                segments=segments,
            )
    targets = () if zone is not None else await _targets(conn, body.area)
    return NewAlert(
        message,
        area,
        zone,
        body.priority,
        body.expires_at,
        body.reference,
        tip_webhook=body.tip_webhook,
        status_webhook=body.status_webhook,
        targets=targets,
        texts=texts,
        template=used,
    )


async def _render(
    conn: Any, name: str, values: dict[str, str]
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A template's texts with `values` put in: the Danish one (the message), the others (by
    language), and what was used (name, version, values) for the request hash and the audit."""
    try:
        template = await templates.load(conn, name)
        rendered = template.render(values)
    except templates.UnknownTemplate:
        raise Problem(
            422, "Unknown template", f"template: no template named {name!r}", template=name
        ) from None
    except templates.TemplateError as exc:
        raise Problem(
            422, "Invalid template values", str(exc), missing=exc.missing, extra=exc.extra
        ) from None
    message = rendered.pop(templates.DEFAULT_LANGUAGE)
    return message, rendered, {"name": name, "version": template.version, "values": values}


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


def check_webhook(field_name: str, url: str, settings: Settings) -> None:
    """A webhook (tip_webhook, status_webhook) must be an https URL with a host (http only where
    the settings allow it), and what is posted there must be signable
    (BROADCASTER_WEBHOOK_SECRET); Problem 422 naming the field otherwise."""
    schemes = ("https", "http") if settings.tip_webhook_allow_http else ("https",)
    try:
        parts = urlsplit(url)
        usable = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not one, a malformed IPv6 address
        usable = False
    if not usable:
        raise Problem(422, "Invalid request", f"{field_name}: must be an https URL with a host")
    if not settings.webhook_secret:
        raise Problem(
            422,
            "Webhooks not set up",
            f"{field_name}: this service has no BROADCASTER_WEBHOOK_SECRET to sign posts with",
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
