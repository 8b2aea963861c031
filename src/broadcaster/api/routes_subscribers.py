"""Subscribers registered by other systems (scope subscribers:write), with points or postal
codes as their places; and a citizen's data on request: what is stored about a number
(subscribers:read), its erasure (subscribers:write)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from broadcaster.api.deps import DbDep, RequestId, require
from broadcaster.api.fields import PHONE_SHAPE, CleanStr, Coordinate, PhoneInput, PostalCode
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.citizens import places, privacy
from broadcaster.ingest.zones import UnknownZones
from broadcaster.ops import audit
from broadcaster.phone import PhoneError, normalise

log = logging.getLogger(__name__)

router = APIRouter(tags=["subscribers"])

Label = Annotated[CleanStr, Field(max_length=50)]


class Location(BaseModel):
    """A point: the subscriber is reached by alerts whose area contains it."""

    model_config = ConfigDict(extra="forbid")
    lat: Annotated[Coordinate, Field(ge=-90, le=90)]
    lon: Annotated[Coordinate, Field(ge=-180, le=180)]
    label: Label | None = None


class PostalCodeLocation(BaseModel):
    """A postal code instead of a point: the subscriber is reached by alerts for the postal
    code and by those whose area reaches into it (see the README)."""

    model_config = ConfigDict(extra="forbid")
    postal_code: PostalCode
    label: Label | None = None


def _location_kind(value: Any) -> str:
    if isinstance(value, PostalCodeLocation) or (
        isinstance(value, dict) and "postal_code" in value
    ):
        return "PostalCode"
    return "Point"


AnyLocation = Annotated[
    Annotated[Location, Tag("Point")] | Annotated[PostalCodeLocation, Tag("PostalCode")],
    Discriminator(_location_kind),
]


class SubscriberIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "phone": "20 12 34 56",
                    "language": "da",
                    "locations": [
                        {"lat": 55.93, "lon": 12.30, "label": "home"},
                        {"postal_code": "3480", "label": "parents"},
                    ],
                }
            ]
        },
    )
    phone: PhoneInput
    locations: list[AnyLocation] = Field(min_length=1, max_length=10)
    language: str = Field("da", pattern=r"^[a-z]{2}$")
    status: Literal["active", "pending"] = "active"


class SubscriberOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 4711,
                    "phone": "+4520123456",
                    "language": "da",
                    "status": "active",
                    "locations": [
                        {"lat": 55.93, "lon": 12.3, "label": "home"},
                        {"postal_code": "3480", "label": "parents"},
                    ],
                }
            ]
        }
    )
    id: int
    phone: str = Field(examples=["+4520123456"], description="E.164")
    language: str
    status: Literal["active", "pending"]
    locations: list[AnyLocation]


@router.post(
    "/v1/subscribers",
    status_code=201,
    response_model=SubscriberOut,
    responses=errors(400, 401, 403, 409, 413, 422, 503),
)
async def create_subscriber(
    body: SubscriberIn, db: DbDep, _key: ApiKey = require("subscribers:write")
) -> dict[str, Any]:
    try:
        phone = normalise(body.phone)
    except PhoneError as exc:
        raise Problem(422, "Invalid phone number", f"phone: {exc}") from None
    async with db.connection() as conn, conn.transaction():
        sub_id = await conn.fetchval(
            """INSERT INTO subscribers (phone, language, status) VALUES ($1, $2, $3)
               ON CONFLICT (phone) DO NOTHING RETURNING id""",
            phone,
            body.language,
            body.status,
        )
        if sub_id is None:
            raise Problem(
                409, "Already registered", "a subscriber with this phone number already exists"
            )
        try:
            await places.add(conn, sub_id, [loc.model_dump() for loc in body.locations])
        except UnknownZones as exc:
            raise unknown_postal_code(exc, body.locations) from None
    return {
        "id": sub_id,
        "phone": phone,
        "language": body.language,
        "status": body.status,
        "locations": [loc.model_dump() for loc in body.locations],
    }


def unknown_postal_code(exc: UnknownZones, locations: Sequence[Any]) -> Problem:
    """422 naming the first location whose postal code no zone has."""
    first = next(
        i
        for i, loc in enumerate(locations)
        if isinstance(loc, PostalCodeLocation) and loc.postal_code in exc.missing
    )
    return Problem(
        422,
        "Unknown postal code",
        f"locations[{first}].postal_code: {exc}",
        unknown=exc.missing,
    )


# -- a citizen's data on request ------------------------------------------------------------------

PhoneInPath = Annotated[
    str,
    Path(
        min_length=4,
        max_length=32,
        description="The number, E.164 (+4520123456; %2B for + in a URL) or national",
    ),
]


class StoredSubscriber(BaseModel):
    id: int
    phone: str
    status: Literal["active", "pending", "opted_out"]
    language: str
    reason: str | None
    source: str
    created_at: datetime
    confirmed_at: datetime | None
    opted_out_at: datetime | None
    opt_out_reason: str | None


class StoredSignup(BaseModel):
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None
    source: str
    language: str
    reason: str | None
    locations: list[AnyLocation]


class StoredInbound(BaseModel):
    received_at: datetime
    kind: str
    text: str
    alert_id: int | None


class StoredDeliveries(BaseModel):
    kind: Literal["alert", "notice"]
    status: str
    n: int
    last_sent_at: datetime | None


class SubscriberRecord(BaseModel):
    """Everything stored about a number (an access request)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "subscriber": {
                        "id": 4711,
                        "phone": "+4520123456",
                        "status": "active",
                        "language": "da",
                        "reason": "help_community",
                        "source": "web",
                        "created_at": "2026-11-02T09:14:05.120000Z",
                        "confirmed_at": "2026-11-02T09:16:41.870000Z",
                        "opted_out_at": None,
                        "opt_out_reason": None,
                    },
                    "locations": [{"lat": 55.9267, "lon": 12.3111, "label": "Hjem"}],
                    "signups": [
                        {
                            "created_at": "2026-11-02T09:14:05.120000Z",
                            "expires_at": "2026-11-02T09:24:05.120000Z",
                            "confirmed_at": "2026-11-02T09:16:41.870000Z",
                            "source": "web",
                            "language": "da",
                            "reason": "help_community",
                            "locations": [{"lat": 55.9267, "lon": 12.3111, "label": "Hjem"}],
                        }
                    ],
                    "inbound_messages": [
                        {
                            "received_at": "2026-12-07T20:21:33.402000Z",
                            "kind": "tip",
                            "text": "Så en hvid varevogn uden nummerplader ved Slotsgade kl. 20",
                            "alert_id": 2,
                        }
                    ],
                    "deliveries": [
                        {
                            "kind": "alert",
                            "status": "delivered",
                            "n": 1,
                            "last_sent_at": "2026-12-07T19:00:04.518000Z",
                        }
                    ],
                }
            ]
        }
    )

    subscriber: StoredSubscriber
    locations: list[AnyLocation]
    signups: list[StoredSignup]
    inbound_messages: list[StoredInbound]
    deliveries: list[StoredDeliveries]


def _number(raw: str) -> str:
    if not PHONE_SHAPE.fullmatch(raw):
        raise Problem(422, "Invalid phone number", "phone: must be a phone number")
    try:
        return normalise(raw)
    except PhoneError as exc:
        raise Problem(422, "Invalid phone number", f"phone: {exc}") from None


@router.get(
    "/v1/subscribers/{phone}",
    response_model=SubscriberRecord,
    responses=errors(401, 403, 404, 422, 503),
)
async def get_subscriber(
    phone: PhoneInPath, db: DbDep, _key: ApiKey = require("subscribers:read")
) -> dict[str, Any]:
    """Everything stored about the number, for a citizen's access request."""
    number = _number(phone)
    async with db.connection() as conn:
        record = await privacy.describe(conn, number)
    if record is None:
        raise Problem(404, "Not found", "no subscriber with this number")
    return record


@router.delete(
    "/v1/subscribers/{phone}", status_code=204, responses=errors(401, 403, 404, 422, 503)
)
async def erase_subscriber(
    phone: PhoneInPath,
    db: DbDep,
    request_id: RequestId,
    key: ApiKey = require("subscribers:write"),
) -> Response:
    """Erase the number's personal data (number, areas, sign-ups; the number in inbound
    messages and receipts). Past deliveries stay, anonymous, for the statistics. Audited."""
    number = _number(phone)
    async with db.connection() as conn, conn.transaction():
        erased = await privacy.erase(conn, number)
        if erased is not None:
            await audit.record(
                conn, key.name, audit.SUBSCRIBER_ERASED, f"subscriber:{erased}", request_id
            )
    if erased is None:
        raise Problem(404, "Not found", "no subscriber with this number")
    log.info("subscriber erased", extra={"subscriber_id": erased})
    return Response(status_code=204)
