"""The body of POST /v1/alerts and POST /v1/alerts/preview, and the one function that turns it
into a validated alert (`build_alert`): creating and previewing run the same checks, so a
preview answers 422 exactly where creating would."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broadcaster.api.area_schema import Area, PostalCodesArea, ZonesArea
from broadcaster.api.fields import CleanStr, Expiry, Timestamp
from broadcaster.api.problems import Problem
from broadcaster.ingest import templates
from broadcaster.ingest.alerts import NewAlert
from broadcaster.ingest.geo import AreaError, parse_area
from broadcaster.ingest.schedule import Start, decide_start
from broadcaster.ingest.sms import segment_count
from broadcaster.ingest.zones import UnknownZones, resolve_names, resolve_postal_codes
from broadcaster.settings import Settings

# Bounded at the edge; the real limit is BROADCASTER_MAX_SEGMENTS, checked in SMS segments.
MAX_MESSAGE_CHARS = 10_000


Message = Annotated[CleanStr, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]
TemplateValue = Annotated[CleanStr, Field(min_length=1, max_length=templates.MAX_VALUE_LENGTH)]
WEBHOOK_URL = r"^https?://[^\s/?#]+[^\s]*$"


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
    send_at: Timestamp | None = Field(
        None,
        description="When to send, with a time zone; at once when absent. An alert that is not "
        "an emergency and would start in the quiet hours waits for their end (BROADCASTER_"
        "QUIET_HOURS_*), and one that expires first is never sent.",
        examples=["2026-12-08T08:30:00+01:00"],
    )
    reference: Annotated[CleanStr, Field(max_length=200)] | None = None
    tip_webhook: (
        Annotated[
            CleanStr,
            Field(
                max_length=2000,
                pattern=WEBHOOK_URL,
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
                pattern=WEBHOOK_URL,
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


async def build_alert(conn: Any, body: AlertIn, settings: Settings) -> tuple[NewAlert, Start]:
    """The alert `body` asks for, checked (Problem 422 naming the field otherwise), with its
    zones resolved, its template (if it names one) rendered in each of its languages, and its
    start decided on the service's clock (send_at, quiet hours). Writes nothing."""
    now = settings.now()
    area = body.area.zone_input()
    zone = None
    if not isinstance(body.area, ZonesArea | PostalCodesArea):
        try:
            zone = parse_area(area)
        except AreaError as exc:
            raise Problem(422, "Invalid area", f"area: {exc}") from None
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
                f"{where}{origin} needs {segments} SMS segments; at most "
                f"{settings.max_segments} are allowed",
                segments=segments,
                max_segments=settings.max_segments,
            )
    if body.expires_at is not None and body.expires_at <= now:
        raise Problem(422, "Invalid request", "expires_at: must be in the future")
    if body.send_at is not None:
        if body.send_at <= now:
            raise Problem(422, "Invalid request", "send_at: must be in the future")
        if body.send_at - now > timedelta(days=settings.max_send_ahead_days):
            raise Problem(
                422,
                "Invalid request",
                f"send_at: must be within {settings.max_send_ahead_days} days from now",
            )
    for field_name, url in [
        ("tip_webhook", body.tip_webhook),
        ("status_webhook", body.status_webhook),
    ]:
        if url is not None:
            check_webhook(field_name, url, settings)
    targets = () if zone is not None else await _targets(conn, body.area)
    start = decide_start(
        now, body.priority == "emergency", body.send_at, body.expires_at, settings.quiet_hours()
    )
    alert = NewAlert(
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
        send_at=body.send_at,
        not_before=start.at if start.reason != "now" else None,
    )
    return alert, start


def texts_of(alert: NewAlert) -> list[tuple[str, str]]:
    """(where, text) of every text the alert carries: its message, then one per language."""
    return [("message", alert.message)] + [
        (f"texts.{language}", text) for language, text in alert.texts.items()
    ]


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
