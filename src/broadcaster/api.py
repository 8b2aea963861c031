"""The ingest API: alerts, subscribers, gateway callbacks, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import URL, Headers
from starlette.types import Receive, Scope, Send

from broadcaster import metrics, problems, queue
from broadcaster.alerts import (
    IdempotencyConflict,
    NewAlert,
    NotCancellable,
    alert_status,
    cancel_alert,
    create_alert,
)
from broadcaster.auth import ApiKey, find_api_key
from broadcaster.database import create_pool
from broadcaster.dispatcher import Dispatcher
from broadcaster.geo import SCALE, AreaError, parse_area
from broadcaster.migrate import NotMigrated, ensure_migrated
from broadcaster.phone import PhoneError, normalise
from broadcaster.problems import PROBLEM_JSON, Problem
from broadcaster.receipt_writer import ReceiptsRefused, ReceiptsUnavailable, ReceiptWriter
from broadcaster.settings import Settings
from broadcaster.sms import segment_count
from gateway_adapters.base import CallbackRejected, GatewayAdapter
from gateway_adapters.registry import create_adapter

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- request models


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    label: str | None = Field(None, max_length=50)


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: str = Field(max_length=32)
    locations: list[Location] = Field(min_length=1, max_length=10)
    language: str = Field("da", pattern=r"^[a-z]{2}$")
    status: Literal["active", "pending"] = "active"


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1)
    area: dict[str, Any]
    priority: Literal["emergency", "high", "normal"] = "normal"
    expires_at: AwareDatetime | None = None
    reference: str | None = Field(None, max_length=200)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


# ---------------------------------------------------------------- dependencies


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require(scope: str) -> Any:
    async def check(request: Request, pool: PoolDep) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "Unauthorized",
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = await find_api_key(pool, token.strip())
        if key is None:
            raise Problem(
                401,
                "Unauthorized",
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in key.scopes:
            raise Problem(403, "Forbidden", f"the API key lacks the scope {scope!r}")
        return key

    return Depends(check)


# ---------------------------------------------------------------- app


def create_app(
    settings: Settings, database_url: str, *, run_dispatcher: bool = False
) -> BroadcasterApi:
    """The FastAPI app; pool, HTTP session, adapters (and optionally the dispatcher) live in the
    lifespan, so nothing connects at import time."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(database_url, min_size=2, max_size=20)
        async with pool.acquire() as conn:
            await ensure_migrated(conn)
        adapters: dict[str, GatewayAdapter] = {
            g.name: create_adapter(g, settings.callback_url(g.name))
            for g in settings.gateway_configs()
        }
        app.state.pool = pool
        app.state.settings = settings
        app.state.adapters = adapters
        app.state.receipt_writer = writer = ReceiptWriter(pool)
        stop = asyncio.Event()
        dispatcher_task = None
        if run_dispatcher:
            dispatcher = Dispatcher(settings, pool, list(adapters.values()), database_url)
            dispatcher_task = asyncio.create_task(dispatcher.run(stop), name="dispatcher")
        try:
            yield
        finally:
            stop.set()
            # Receipts still queued are committed (or refused) before the pool goes away.
            await writer.close()
            if dispatcher_task is not None:
                await dispatcher_task
            for adapter in adapters.values():
                await adapter.close()
            await pool.close()

    app = BroadcasterApi(title="broadcaster", version="0.1.0", lifespan=lifespan)
    problems.install(app)
    _routes(app)
    return app


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(pool: PoolDep) -> dict[str, str]:
        try:
            async with pool.acquire(timeout=5) as conn:
                await ensure_migrated(conn)
        except NotMigrated as exc:
            raise Problem(503, "Not ready", str(exc)) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            raise Problem(503, "Not ready", "the database is unreachable") from None
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"])
    async def metrics_endpoint(pool: PoolDep) -> Response:
        with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError):
            metrics.QUEUE_DEPTH.set(await queue.queue_depth(pool))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/subscribers", status_code=201, tags=["subscribers"])
    async def create_subscriber(
        body: SubscriberIn, pool: PoolDep, _key: ApiKey = require("subscribers:write")
    ) -> dict[str, Any]:
        try:
            phone = normalise(body.phone)
        except PhoneError as exc:
            raise Problem(422, "Invalid phone number", f"phone: {exc}") from None
        async with pool.acquire() as conn, conn.transaction():
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
            await conn.execute(
                """INSERT INTO subscriber_locations (subscriber_id, label, position)
                   SELECT $1, l.label, point(l.lon * $5, l.lat * $5)
                   FROM unnest($2::text[], $3::float8[], $4::float8[]) AS l(label, lon, lat)""",
                sub_id,
                [loc.label for loc in body.locations],
                [loc.lon for loc in body.locations],
                [loc.lat for loc in body.locations],
                SCALE,
            )
        return {
            "id": sub_id,
            "phone": phone,
            "language": body.language,
            "status": body.status,
            "locations": [loc.model_dump() for loc in body.locations],
        }

    @app.post("/v1/alerts", status_code=202, tags=["alerts"])
    async def post_alert(
        body: AlertIn,
        pool: PoolDep,
        settings: SettingsDep,
        key: ApiKey = require("alerts:write"),
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        try:
            zone = parse_area(body.area)
        except AreaError as exc:
            raise Problem(422, "Invalid area", f"area: {exc}") from None
        segments = segment_count(body.message)
        if segments > settings.max_segments:
            raise Problem(
                422,
                "Message too long",
                f"message needs {segments} SMS segments; at most "
                f"{settings.max_segments} are allowed",
            )
        if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
            raise Problem(422, "Invalid request", "expires_at: must be in the future")
        alert = NewAlert(
            body.message, body.area, zone, body.priority, body.expires_at, body.reference
        )
        try:
            async with pool.acquire() as conn:
                alert_id, created = await create_alert(conn, alert, key.id, idempotency_key)
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

    @app.get("/v1/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(
        alert_id: int, pool: PoolDep, _key: ApiKey = require("alerts:read")
    ) -> dict[str, Any]:
        status = await alert_status(pool, alert_id)
        if status is None:
            raise Problem(404, "Not found", f"no alert with id {alert_id}")
        return status

    @app.post("/v1/alerts/{alert_id}/cancel", tags=["alerts"])
    async def cancel(
        alert_id: int, pool: PoolDep, _key: ApiKey = require("alerts:write")
    ) -> dict[str, Any]:
        try:
            async with pool.acquire() as conn:
                found = await cancel_alert(conn, alert_id)
                status = await alert_status(conn, alert_id)
        except NotCancellable as exc:
            raise Problem(409, "Not cancellable", str(exc)) from None
        if not found or status is None:
            raise Problem(404, "Not found", f"no alert with id {alert_id}")
        log.info("alert cancelled", extra={"alert_id": alert_id})
        return status

    @app.post("/v1/callbacks/{gateway}", tags=["callbacks"])
    async def callback(gateway: str, request: Request) -> dict[str, int]:
        """A gateway's delivery receipts, in its own format and signed by it. 200 once they are
        committed. (Answered by `BroadcasterApi` in front of the routing; declared here for the
        OpenAPI schema and for the 405 on other methods.)"""
        body = await request.body()
        url = str(request.url)
        return {
            "received": await receive_callback(request.app, gateway, request.headers, body, url)
        }


# ---------------------------------------------------------------- gateway callbacks

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


class BroadcasterApi(FastAPI):
    """The FastAPI app, with POST /v1/callbacks/{gateway} answered before FastAPI's machinery.

    Gateways post one callback per SMS, so this is the API's busiest path by far; FastAPI's
    per-request work (telemetry checks, middleware, routing, request objects, dependencies)
    cost more than verifying a receipt and committing it with the group commit of
    `ReceiptWriter`. Everything else, other methods on the same path included, goes through
    FastAPI. Errors are problem+json as elsewhere."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = _route_path(scope)
            if path.startswith(CALLBACK_PREFIX):
                gateway = path[len(CALLBACK_PREFIX) :]
                if gateway and "/" not in gateway:
                    await self._callback(gateway, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _callback(self, gateway: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await _read_body(receive)
            if body is None:
                return  # the client went away
            adapter = self.state.adapters.get(gateway)
            # Only adapters that check the URL (Twilio signs it) get it: building it is not free.
            url = str(URL(scope=scope)) if getattr(adapter, "callback_uses_url", True) else ""
            stored = await receive_callback(self, gateway, Headers(scope=scope), body, url)
        except Problem as exc:
            await _send_problem(send, scope, exc)
            return
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            await _send_problem(
                send,
                scope,
                Problem(500, "Internal error", "an unexpected error occurred; it has been logged"),
            )
            return
        await _send(send, 200, b'{"received":%d}' % stored, b"application/json")


def _route_path(scope: Scope) -> str:
    """The path without the root path, as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


async def _read_body(receive: Receive) -> bytes | None:
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


async def _send_problem(send: Send, scope: Scope, exc: Problem) -> None:
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
    await _send(send, exc.status, json.dumps(body).encode(), PROBLEM_JSON.encode(), extra)


async def _send(
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
