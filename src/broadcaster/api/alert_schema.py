"""The body of POST /v1/alerts and POST /v1/alerts/preview, and the one function that turns it
into a validated alert (`build_alert`): creating and previewing run the same checks, so a
preview answers 422 exactly where creating would."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from broadcaster.api.area_schema import Area, PostalCodesArea, ZonesArea
from broadcaster.api.fields import CleanStr, Expiry, Timestamp
from broadcaster.api.problems import Problem
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


async def build_alert(conn: Any, body: AlertIn, settings: Settings) -> tuple[NewAlert, Start]:
    """The alert `body` asks for, checked (Problem 422 naming the field otherwise), with its
    zones resolved and its start decided on the service's clock (send_at, quiet hours)."""
    now = settings.now()
    area = body.area.zone_input()
    zone = None
    if not isinstance(body.area, ZonesArea | PostalCodesArea):
        try:
            zone = parse_area(area)
        except AreaError as exc:
            raise Problem(422, "Invalid area", f"area: {exc}") from None
    for where, text in texts_of(body):
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
    if body.tip_webhook is not None:
        check_tip_webhook(body.tip_webhook, settings)
    targets = () if zone is not None else await _targets(conn, body.area)
    start = decide_start(
        now, body.priority == "emergency", body.send_at, body.expires_at, settings.quiet_hours()
    )
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
        send_at=body.send_at,
        not_before=start.at if start.reason != "now" else None,
    )
    return alert, start


def texts_of(body: AlertIn) -> list[tuple[str, str]]:
    """(where, text) of every text the alert carries: its message, then one per language."""
    return [("message", body.message)] + [
        (f"texts.{language}", text) for language, text in (body.texts or {}).items()
    ]


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
