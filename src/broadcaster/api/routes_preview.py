"""POST /v1/alerts/preview: what POST /v1/alerts would do with the same body, without doing any
of it (nothing is written, no audit entry, no wake-up)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.alert_schema import AlertIn, build_alert, texts_of
from broadcaster.api.deps import DbDep, SettingsDep, require
from broadcaster.api.openapi import errors
from broadcaster.auth import ApiKey
from broadcaster.ingest.preview import count_recipients, recipients_per_text
from broadcaster.ingest.schedule import finish
from broadcaster.ingest.sms import measure

router = APIRouter(tags=["alerts"])


class Recipients(BaseModel):
    count: int = Field(description="Subscribers the alert would reach, each once")
    exact: bool = Field(
        description="Counted; false: estimated from a sample of subscribers (zones with more "
        "than 20,000 recipients), within `margin` either way (95 %)"
    )
    margin: int = Field(description="0 when exact")


class TextPreview(BaseModel):
    field: str = Field(description="`message`, or `texts.<language>`", examples=["message"])
    language: str | None = Field(description="null for `message`: everyone without a text")
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    units: int = Field(
        description="Septets (GSM-7, an extension character counts two) or "
        "UTF-16 code units (UCS-2, a character outside the BMP counts two)"
    )
    segments: int = Field(description="SMS segments per message: 160/153 GSM-7, 70/67 UCS-2")
    recipients: int = Field(description="Recipients who would get this text")


class GatewayCost(BaseModel):
    gateway: str
    price_per_segment: float | None = Field(description="null: no price configured")
    currency: str
    cost: float | None = Field(description="total_segments x price_per_segment")


class Schedule(BaseModel):
    starts_at: datetime = Field(description="When sending would start")
    reason: Literal["now", "send_at", "quiet_hours"] = Field(
        description="`now`; `send_at` as asked; `quiet_hours`: pushed to the end of the quiet "
        "hours (not for emergencies)"
    )
    in_quiet_hours: bool = Field(description="The start asked for (now or send_at) is in them")
    expires_first: bool = Field(description="It expires before it would start: never sent")
    estimated_seconds: float | None = Field(
        description="Sending time at the first gateway's rate_per_second (null: no gateway)"
    )
    estimated_completion: datetime | None = Field(
        description="starts_at plus that, with the quiet hours' pause for a non-emergency"
    )


EXAMPLE: dict[str, Any] = {
    "recipients": {"count": 48210, "exact": True, "margin": 0},
    "texts": [
        {
            "field": "message",
            "language": None,
            "encoding": "GSM-7",
            "characters": 49,
            "units": 49,
            "segments": 1,
            "recipients": 45100,
        },
        {
            "field": "texts.en",
            "language": "en",
            "encoding": "GSM-7",
            "characters": 55,
            "units": 55,
            "segments": 1,
            "recipients": 3110,
        },
    ],
    "total_segments": 48210,
    "max_segments": 6,
    "costs": [
        {"gateway": "primary", "price_per_segment": 0.21, "currency": "DKK", "cost": 10124.1}
    ],
    "schedule": {
        "starts_at": "2026-12-08T07:00:00+00:00",
        "reason": "quiet_hours",
        "in_quiet_hours": True,
        "expires_first": False,
        "estimated_seconds": 96.42,
        "estimated_completion": "2026-12-08T07:01:36.420000+00:00",
    },
}


class Preview(BaseModel):
    """What the alert would do if it were created now."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    recipients: Recipients
    texts: list[TextPreview]
    total_segments: int = Field(description="Segments over all recipients")
    max_segments: int = Field(description="The most segments a text may take")
    costs: list[GatewayCost] = Field(description="Per configured gateway, most preferred first")
    schedule: Schedule


@router.post(
    "/v1/alerts/preview",
    response_model=Preview,
    responses={
        **errors(400, 401, 403, 413, 422, 429, 503),
    },
)
async def preview_alert(
    body: AlertIn, db: DbDep, settings: SettingsDep, _key: ApiKey = require("alerts:write")
) -> dict[str, Any]:
    """The recipients, SMS encoding and segments, cost, sending time and start an alert with
    this body would have (the body of POST /v1/alerts, checked the same way: 422 where creating
    it would be). Nothing is created. Scope alerts:write: counting subscribers in any area one
    draws says who lives where, so it is for those who may send."""
    async with db.connection() as conn:
        alert, start = await build_alert(conn, body, settings)
        count = await count_recipients(conn, alert)
    languages = list(alert.texts)
    per_text = recipients_per_text(count, languages)
    texts: list[dict[str, Any]] = []
    total_segments = 0
    for where, text in texts_of(alert):
        language = where.removeprefix("texts.") if where != "message" else None
        length = measure(text)
        texts.append(
            {
                "field": where,
                "language": language,
                "encoding": length.encoding,
                "characters": len(text),
                "units": length.units,
                "segments": length.segments,
                "recipients": per_text.get(language, 0),
            }
        )
        total_segments += length.segments * per_text.get(language, 0)
    costs = [
        {
            "gateway": g.name,
            "price_per_segment": g.price_per_segment,
            "currency": settings.currency,
            "cost": (
                round(total_segments * g.price_per_segment, 2)
                if g.price_per_segment is not None
                else None
            ),
        }
        for g in settings.gateways
    ]
    quiet = settings.quiet_hours()
    emergency = body.priority == "emergency"
    seconds = count.total / settings.gateways[0].rate_per_second if settings.gateways else None
    return {
        "recipients": {"count": count.total, "exact": count.exact, "margin": count.margin},
        "texts": texts,
        "total_segments": total_segments,
        "max_segments": settings.max_segments,
        "costs": costs,
        "schedule": {
            "starts_at": start.at,
            "reason": start.reason,
            "in_quiet_hours": quiet.contains(body.send_at or settings.now()),
            "expires_first": start.expires_first,
            "estimated_seconds": round(seconds, 2) if seconds is not None else None,
            "estimated_completion": (
                finish(start.at, seconds, emergency, quiet) if seconds is not None else None
            ),
        },
    }
