"""Gateway callbacks: delivery receipts in each gateway's own format, verified by the adapter,
committed through the group commit of `ReceiptWriter`. The busiest path: `BroadcasterApi` (app.py)
answers it before FastAPI's machinery, with the helpers below."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, FastAPI, Request
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from broadcaster import metrics
from broadcaster.api.problems import PROBLEM_JSON, Problem
from broadcaster.receipt_writer import ReceiptsRefused, ReceiptsUnavailable, ReceiptWriter
from broadcaster.settings import Settings
from gateway_adapters.base import CallbackRejected, GatewayAdapter

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])


@router.post("/v1/callbacks/{gateway}", tags=["callbacks"])
async def callback(gateway: str, request: Request) -> dict[str, int]:
    """A gateway's delivery receipts, in its own format and signed by it. 200 once they are
    committed. (Answered by `BroadcasterApi` in front of the routing; declared here for the
    OpenAPI schema and for the 405 on other methods.)"""
    body = await request.body()
    url = str(request.url)
    return {"received": await receive_callback(request.app, gateway, request.headers, body, url)}


CALLBACK_PREFIX = "/v1/callbacks/"
# A receipt is a few hundred bytes; a body this large is not one.
MAX_CALLBACK_BYTES = 256 * 1024


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


def route_path(scope: Scope) -> str:
    """The path without the root path, as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


async def read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            raise Problem(
                413, "Content too large", f"a callback is at most {MAX_CALLBACK_BYTES} bytes"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_problem(send: Send, scope: Scope, exc: Problem) -> None:
    body = {
        "type": exc.type,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "instance": scope["path"],
        **exc.extra,
    }
    extra = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()
    ]
    await send_response(send, exc.status, json.dumps(body).encode(), PROBLEM_JSON.encode(), extra)


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
