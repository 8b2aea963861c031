"""Inbound SMS: a gateway's incoming-message webhook (GatewayAPI's MO SMS, Twilio's "a message
comes in") in its own format, verified by the adapter as receipts are (no API key), stored and
acted on through the group commit of `InboundWriter` (citizens/inbound.py says what happens to
each message). Answered like callbacks, by `BroadcasterApi` (app.py) in front of the routing,
with the helper below; SMPP's inbound messages come over the SMPP connection instead."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.datastructures import Headers

from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.citizens.inbound_writer import InboundWriter
from broadcaster.dispatch.receipt_writer import ReceiptsRefused, ReceiptsUnavailable
from broadcaster.ops import metrics
from broadcaster.settings import Settings
from gateway_adapters.base import CallbackRejected, GatewayAdapter
from gateway_adapters.twilio import EMPTY_TWIML

INBOUND_PREFIX = "/v1/inbound/"

router = APIRouter(tags=["inbound"])

_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Stored (a repeated message is stored once); GatewayAPI gets JSON, Twilio "
        "empty TwiML",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"received": {"type": "integer"}},
                    "required": ["received"],
                },
                "example": {"received": 1},
            },
            "text/xml": {"schema": {"type": "string"}, "example": EMPTY_TWIML.decode()},
        },
    }
}


@router.post(
    "/v1/inbound/{gateway}",
    response_class=Response,
    responses={**_ANSWERS, **errors(400, 401, 404, 413, 422, 503)},
)
async def inbound(gateway: str, request: Request) -> Response:
    """SMS citizens sent to one of our numbers, as the gateway's incoming-message webhook posts
    them, signed by the gateway (GatewayAPI: X-Gwapi-Signature; Twilio: X-Twilio-Signature).
    Each is stored and acted on (keywords STOP, START, HELP, JOIN and their Danish words; any
    other text is a tip) before the answer. (Answered by `BroadcasterApi` in front of the
    routing; declared here for the OpenAPI schema and for the 405 on other methods.)"""
    body = await request.body()
    content_type, answer = await receive_inbound(
        request.app, gateway, request.headers, body, str(request.url)
    )
    return Response(answer, media_type=content_type)


async def receive_inbound(
    app: FastAPI, gateway: str, headers: Headers, body: bytes, url: str
) -> tuple[str, bytes]:
    """Verify and parse one inbound request, commit its messages; returns the answer the
    gateway expects (content type, body). Raises `Problem`: 404 unknown gateway (or one whose
    inbound messages do not come over HTTP), 401/400 refused by the adapter, 422 a message the
    database can never store, 503 not committed in time."""
    adapter: GatewayAdapter | None = app.state.adapters.get(gateway)
    if adapter is None:
        raise Problem(404, "Unknown gateway", f"no gateway named {gateway!r} is configured")
    try:
        messages = adapter.parse_inbound(headers, body, url)
    except CallbackRejected as exc:
        reason = {401: "signature", 404: "not_http"}.get(exc.status, "malformed")
        metrics.CALLBACKS_REJECTED.labels(gateway, f"inbound_{reason}").inc()
        raise Problem(exc.status, "Inbound message rejected", str(exc)) from None
    writer: InboundWriter = app.state.inbound_writer
    settings: Settings = app.state.settings
    try:
        stored = await writer.write(
            gateway, messages, wait_seconds=settings.callback_deadline_seconds
        )
    except ReceiptsRefused:
        raise Problem(
            422,
            "Message cannot be stored",
            "the message holds a value the database cannot store; sending it again will not help",
        ) from None
    except ReceiptsUnavailable:
        raise Problem(
            503,
            "Service unavailable",
            "the message could not be stored in time; try again",
            headers={"Retry-After": "1"},
        ) from None
    return adapter.inbound_reply(stored)
