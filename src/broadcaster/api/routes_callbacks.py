"""Gateway callbacks: delivery receipts in each gateway's own format, verified by the adapter,
committed through the group commit of `ReceiptWriter`. The busiest path: `BroadcasterApi` (app.py)
answers it before FastAPI's machinery, with the helpers below."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request
from starlette.datastructures import Headers
from starlette.types import Receive

from broadcaster.api.openapi import errors, example
from broadcaster.api.problems import Problem
from broadcaster.dispatch.receipt_writer import ReceiptsRefused, ReceiptsUnavailable, ReceiptWriter
from broadcaster.ops import metrics
from broadcaster.settings import Settings
from gateway_adapters.base import CallbackRejected, GatewayAdapter

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])


@router.post(
    "/v1/callbacks/{gateway}",
    responses={200: example({"received": 3}), **errors(400, 401, 404, 413, 422, 503)},
)
async def callback(gateway: str, request: Request) -> dict[str, int]:
    """A gateway's delivery receipts, in its own format and signed by it. 200 once they are
    committed. (Answered by `BroadcasterApi` in front of the routing; declared here for the
    OpenAPI schema and for the 405 on other methods.)"""
    body = await request.body()
    url = str(request.url)
    return {"received": await receive_callback(request.app, gateway, request.headers, body, url)}


CALLBACK_PREFIX = "/v1/callbacks/"


async def receive_callback(
    app: FastAPI, gateway: str, headers: Headers, body: bytes, url: str
) -> int:
    """Verify and parse one callback request, commit its receipts; returns how many. Raises
    `Problem`: 404 unknown gateway, 401/400 refused by the adapter, 422 receipts the database
    can never store, 503 not committed in time (the database is away or slow)."""
    adapter: GatewayAdapter | None = app.state.adapters.get(gateway)
    if adapter is None:
        raise Problem(404, "Unknown gateway", f"no gateway named {gateway!r} is configured")
    try:
        updates = adapter.parse_callback(headers, body, url)
    except CallbackRejected as exc:
        reason = "signature" if exc.status == 401 else "malformed"
        metrics.CALLBACKS_REJECTED.labels(gateway, reason).inc()
        raise Problem(exc.status, "Callback rejected", str(exc)) from None
    writer: ReceiptWriter = app.state.receipt_writer
    settings: Settings = app.state.settings
    try:
        # Answered within the gateways' window (GatewayAPI waits 5 s, Twilio 15 s): what is not
        # committed by then is answered 503, and the gateway's retry brings it again.
        return await writer.write(gateway, updates, wait_seconds=settings.callback_deadline_seconds)
    except ReceiptsRefused:
        metrics.CALLBACKS_REJECTED.labels(gateway, "unstorable").inc()
        raise Problem(
            422,
            "Receipt cannot be stored",
            "the receipt holds a value the database cannot store (such as a NUL character); "
            "sending it again will not help",
        ) from None
    except ReceiptsUnavailable:
        raise Problem(
            503,
            "Service unavailable",
            "the receipts could not be stored in time; try again",
            headers={"Retry-After": "1"},
        ) from None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None if the client went away; Problem 413 past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, "Content too large", f"a callback is at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
