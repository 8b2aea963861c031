"""POST /v1/alerts with `Content-Type: application/cap+xml`: an OASIS CAP 1.2 alert message,
read by ingest/cap.py and created through the same path as a JSON alert (routes_alerts.py:
the same checks, idempotency, audit entry and answer). docs/cap.md has the mapping.

The route sits on the same path and method as the JSON one and is matched only for the CAP
media type (CapRoute), so each body has a handler of its own; the OpenAPI document describes
both bodies on the JSON route's operation. The key and its scope are checked before the body is
read (the Guard, then `require`), as for every route.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import Scope

from broadcaster.api.deps import DbDep, RequestId, SettingsDep, require
from broadcaster.api.problems import Problem
from broadcaster.api.routes_alerts import (
    check_expiry,
    check_texts,
    created_answer,
    store_alert,
)
from broadcaster.auth import ApiKey
from broadcaster.ingest import cap, cap_alerts, cap_messages
from broadcaster.ingest.alerts import IdempotencyConflict, NewAlert, NotCancellable, alert_status
from broadcaster.ingest.schedule import decide_start
from broadcaster.ingest.zones import UnknownZones, resolve_postal_codes


def is_cap(scope: Scope) -> bool:
    media_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    return media_type == cap.MEDIA_TYPE


class CapRoute(APIRoute):
    """A route that matches only requests whose body is CAP XML."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL and not is_cap(scope):
            return Match.NONE, {}
        return match, child


router = APIRouter(tags=["alerts"], route_class=CapRoute)

IDENTIFIER_REUSED = (
    "identifier: this sender's identifier was already used for a different message (or is by a "
    "request in progress); CAP gives every message, updates and cancels included, an identifier "
    "of its own"
)


@router.post("/v1/alerts", include_in_schema=False)
async def post_cap_alert(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    request_id: RequestId,
    key: ApiKey = require("alerts:write"),
) -> JSONResponse:
    """A CAP Alert or Update: 202 like a JSON alert; a Cancel: 200 with the alerts cancelled.
    An Idempotency-Key header is not needed: sender and identifier are the key. Every message
    taken is kept (ingest/cap_messages.py) in the transaction that acts on it."""
    try:
        body = await request.body()
        message = cap.parse(body)
        received = cap_messages.Received(message, body, key.id, key.name, request_id)
        if message.msg_type == "Cancel":
            return await _cancel(received, db, key, request_id)
        text, texts, origin = cap.texts(message)
        target = cap.target(message)
    except cap.CapError as exc:
        raise Problem(exc.status, exc.title, str(exc)) from None
    check_texts(
        [(f"{origin['message']} (headline, description, instruction)", text)]
        + [
            (f"{origin[lang]} (headline, description, instruction)", t) for lang, t in texts.items()
        ],
        settings,
    )
    expires_at = cap.expires(message)
    where = next((i.where for i in message.infos if i.expires == expires_at), "expires")
    check_expiry(expires_at, f"{where}.expires")
    priority = cap.priority(message.infos)
    # The quiet hours hold a CAP alert as they hold a JSON one (emergencies go at once).
    start = decide_start(
        settings.now(), priority == "emergency", None, expires_at, settings.quiet_hours()
    )
    try:
        async with db.connection() as conn:
            targets = await _postal_codes(conn, message, target.postal_codes)
            alert = NewAlert(
                text,
                target.area,
                target.zone,
                priority,
                expires_at,
                message.identifier,
                targets=targets,
                texts=texts,
                not_before=start.at if start.reason != "now" else None,
                cap={
                    "sender": message.sender,
                    "identifier": message.identifier,
                    "status": message.status,
                    "msg_type": message.msg_type,
                },
            )

            async def after_create(conn: asyncpg.Connection, alert_id: int) -> None:
                message_id = await cap_messages.mark_and_record(conn, alert_id, received)
                if message.msg_type == "Update":
                    updated = await cap_alerts.supersede(
                        conn, message, key.name, request_id, message_id
                    )
                    await cap_messages.link(conn, message_id, updated, "updated")

            alert_id, created, status = await store_alert(
                conn, alert, key, request_id, message.idempotency_key, after_create
            )
    except IdempotencyConflict:
        raise Problem(422, "Identifier reused", IDENTIFIER_REUSED) from None
    return created_answer(alert_id, created, status, priority, "cap")


async def _postal_codes(
    conn: asyncpg.Connection, message: cap.CapMessage, codes: list[str]
) -> tuple[int, ...]:
    """Zone ids of the postal codes; 422 naming the first area with an unknown one."""
    if not codes:
        return ()
    try:
        found = await resolve_postal_codes(conn, codes)
    except UnknownZones as exc:
        where = next(
            a.where
            for i in message.infos
            for a in i.areas
            if any(c in exc.missing for c in a.postal_codes)
        )
        raise Problem(422, "Unknown zone", f"{where}.geocode: {exc}", unknown=exc.missing) from None
    return tuple(dict.fromkeys(found[c] for c in codes))


async def _cancel(
    received: cap_messages.Received, db: Any, key: ApiKey, request_id: str
) -> JSONResponse:
    """Keep the Cancel and cancel the alerts its references name, as
    POST /v1/alerts/{id}/cancel does (and with the same audit entry), all or none. The same
    Cancel again (this key, sender and identifier, the same header) is answered as the first
    was, with the alerts' statuses now, and changes nothing."""
    try:
        async with db.connection() as conn:
            async with conn.transaction():
                message_id, created = await cap_messages.record(conn, received)
                if created:
                    # In id order, as a repeat finds them.
                    ids = sorted(
                        await cap_alerts.cancel(
                            conn, received.message, key.name, request_id, message_id
                        )
                    )
                    await cap_messages.link(conn, message_id, ids, "cancelled")
                else:
                    ids = await cap_messages.linked(conn, message_id, "cancelled")
            shown = await cap_messages.show(conn, message_id)
            statuses = [await alert_status(conn, alert_id) for alert_id in ids]
    except cap.CapError as exc:
        raise Problem(exc.status, exc.title, str(exc)) from None
    except NotCancellable as exc:
        raise Problem(409, "Not cancellable", str(exc)) from None
    except IdempotencyConflict:
        raise Problem(422, "Identifier reused", IDENTIFIER_REUSED) from None
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return JSONResponse({"message": shown, "cancelled": statuses}, status_code=200, headers=headers)
