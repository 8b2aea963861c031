"""Self-service sign-up (the back end of a public web form or app), with its own scope
`signups:write` so a front end can hold a key that can do nothing else."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.deps import DbDep, SettingsDep, require
from broadcaster.api.fields import PhoneInput
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.api.routes_subscribers import AnyLocation, unknown_postal_code
from broadcaster.auth import ApiKey
from broadcaster.citizens import signups
from broadcaster.citizens.throttle import Throttled
from broadcaster.ingest.zones import UnknownZones
from broadcaster.phone import PhoneError, normalise

router = APIRouter(tags=["signups"])

Reason = Literal[
    "help_police",
    "help_community",
    "feel_safer",
    "stay_informed",
    "general_interest",
    "curious",
    "other",
]


class SignupIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "phone": "20 12 34 56",
                    "locations": [{"postal_code": "3400"}, {"lat": 55.93, "lon": 12.30}],
                    "language": "da",
                    "reason": "help_community",
                }
            ]
        },
    )
    phone: PhoneInput
    locations: list[AnyLocation] = Field(min_length=1, max_length=10)
    language: Literal["da", "en"] = "da"
    reason: Reason | None = Field(None, description="Why the citizen signs up (optional)")


class SignupOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "code_sent", "expires_in": 600}]}
    )
    status: Literal["code_sent"]
    expires_in: int = Field(description="Seconds the code is valid for")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"phone": "20123456", "code": "042917"}]}
    )
    phone: PhoneInput
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="The six digits sent by SMS")]


class ConfirmOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "active",
                    "phone": "+4520123456",
                    "language": "da",
                    "locations": [{"postal_code": "3400", "label": None}],
                }
            ]
        }
    )
    status: Literal["active"]
    phone: str
    language: str
    locations: list[AnyLocation]


def client_of(request: Request) -> str:
    """Who asks, for the throttles: the client address (behind an ingress, the one it
    forwards, when BROADCASTER_FORWARDED_ALLOW_IPS trusts it)."""
    return request.client.host if request.client else "unknown"


def phone_or_422(raw: str) -> str:
    try:
        return normalise(raw)
    except PhoneError as exc:
        raise Problem(422, "Invalid phone number", f"phone: {exc}") from None


def too_many(exc: Throttled) -> Problem:
    return Problem(
        429,
        "Too many requests",
        f"too many attempts; try again in {exc.retry_after} seconds",
        headers={"Retry-After": str(exc.retry_after)},
    )


@router.post(
    "/v1/signups",
    status_code=202,
    response_model=SignupOut,
    responses=errors(400, 401, 403, 413, 422, 429, 503),
)
async def post_signup(
    body: SignupIn,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    _key: ApiKey = require("signups:write"),
) -> dict[str, Any]:
    """Ask for a code by SMS; the subscription is active once the code is confirmed."""
    phone = phone_or_422(body.phone)
    try:
        async with db.connection() as conn:
            lifetime = await signups.start(
                conn,
                settings,
                phone=phone,
                locations=[loc.model_dump() for loc in body.locations],
                language=body.language,
                reason=body.reason,
                source="api",
                client=client_of(request),
            )
    except Throttled as exc:
        raise too_many(exc) from None
    except UnknownZones as exc:
        raise unknown_postal_code(exc, body.locations) from None
    return {"status": "code_sent", "expires_in": lifetime}


@router.post(
    "/v1/signups/confirm",
    response_model=ConfirmOut,
    responses=errors(400, 401, 403, 413, 422, 429, 503),
)
async def confirm_signup(
    body: ConfirmIn,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    _key: ApiKey = require("signups:write"),
) -> dict[str, Any]:
    """Confirm a sign-up with the code sent to the number: the subscription becomes active."""
    phone = phone_or_422(body.phone)
    try:
        async with db.connection() as conn:
            done = await signups.confirm(
                conn, settings, phone=phone, code=body.code, client=client_of(request)
            )
    except Throttled as exc:
        raise too_many(exc) from None
    except signups.TooManyAttempts as exc:
        raise Problem(429, "Too many attempts", f"{exc.field}: {exc}") from None
    except signups.SignupError as exc:
        raise Problem(422, "Not confirmed", f"{exc.field}: {exc}") from None
    return {
        "status": "active",
        "phone": done.phone,
        "language": done.language,
        "locations": done.locations,
    }
