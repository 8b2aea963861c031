"""The app: built by `create_app`, with pool, settings, adapters (and optionally the dispatcher)
made in its lifespan, the routers of each resource, and problem+json errors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.datastructures import URL, Headers
from starlette.types import Receive, Scope, Send

from broadcaster.api import (
    openapi,
    problems,
    routes_alerts,
    routes_audit,
    routes_callbacks,
    routes_cap,
    routes_cap_messages,
    routes_inbound,
    routes_ops,
    routes_preview,
    routes_signups,
    routes_stats,
    routes_subscribers,
    routes_templates,
    routes_tips,
    routes_zones,
)
from broadcaster.api.deps import Database
from broadcaster.api.guard import Guard, body_pending, route_path
from broadcaster.api.problems import Problem, send_problem, send_response
from broadcaster.api.request_metrics import RequestMetrics
from broadcaster.api.routes_callbacks import CALLBACK_PREFIX, read_body, receive_callback
from broadcaster.api.routes_inbound import INBOUND_PREFIX, receive_inbound
from broadcaster.citizens.inbound_writer import InboundWriter
from broadcaster.database import create_pool
from broadcaster.dispatch.dispatcher import Dispatcher, worker_name
from broadcaster.dispatch.outage import OutageWatch
from broadcaster.dispatch.pool import dispatcher_pool as open_dispatcher_pool
from broadcaster.dispatch.pool import milliseconds
from broadcaster.dispatch.receipt_writer import ReceiptWriter
from broadcaster.migrate import ensure_migrated
from broadcaster.ops import metrics
from broadcaster.settings import Settings
from broadcaster.web import routes as web_routes
from gateway_adapters.base import GatewayAdapter
from gateway_adapters.registry import create_adapter

log = logging.getLogger(__name__)

DESCRIPTION = """SMS alerts to everyone registered in a zone. Every /v1 route except the gateways'
callbacks and inbound SMS needs `Authorization: Bearer <key>`; errors are RFC 9457 problem
details."""


def create_app(
    settings: Settings, database_url: str, *, run_dispatcher: bool = False
) -> BroadcasterApi:
    """The FastAPI app; pool, HTTP session, adapters (and optionally the dispatcher) live in the
    lifespan, so nothing connects at import time."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A statement of a request runs at most db_statement_timeout_seconds: one waiting for a
        # table someone else has locked (or an overloaded database) is answered 503 with
        # Retry-After instead of holding the request and its connection indefinitely.
        session: dict[str, str] = {}
        if settings.db_statement_timeout_seconds:
            session["statement_timeout"] = milliseconds(settings.db_statement_timeout_seconds)
        pool = await create_pool(database_url, min_size=2, max_size=20, server_settings=session)
        metrics.POOLS.watch("api", pool)
        async with pool.acquire() as conn:
            await ensure_migrated(conn)
        adapters: dict[str, GatewayAdapter] = {
            g.name: create_adapter(g, settings.callback_url(g.name))
            for g in settings.gateway_configs()
        }
        # One report per outage for the whole process (requests, receipts, dispatcher loops).
        outage = OutageWatch(meanwhile="answering 503 until it is back")
        app.state.pool = pool
        app.state.database = Database(pool, settings.db_timeout_seconds, outage)
        app.state.settings = settings
        app.state.adapters = adapters
        app.state.receipt_writer = writer = ReceiptWriter(pool, outage=outage)
        app.state.inbound_writer = inbound_writer = InboundWriter(pool, settings, outage=outage)
        stop = asyncio.Event()
        dispatcher_task = None
        dispatcher_pool = app.state.dispatcher_pool = None
        if run_dispatcher:
            # Its own pool: its statements have no time limit, and a batch out holds a
            # connection that requests must not wait for.
            worker = worker_name()
            dispatcher_pool = await open_dispatcher_pool(settings, database_url, worker)
            app.state.dispatcher_pool = dispatcher_pool
            metrics.POOLS.watch("dispatcher", dispatcher_pool)
            dispatcher = Dispatcher(
                settings,
                dispatcher_pool,
                list(adapters.values()),
                database_url,
                worker,
                outage=outage,
            )
            dispatcher_task = asyncio.create_task(dispatcher.run(stop), name="dispatcher")
        try:
            yield
        finally:
            stop.set()
            # Receipts still queued are committed (or refused) before the pool goes away.
            await writer.close()
            await inbound_writer.close()
            if dispatcher_task is not None:
                await dispatcher_task
            for adapter in adapters.values():
                await adapter.close()
            if dispatcher_pool is not None:
                await dispatcher_pool.close()
            await pool.close()

    app = BroadcasterApi(
        title="broadcaster",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.openapi = functools.partial(openapi.build, app)  # type: ignore[method-assign]
    problems.install(app)
    app.add_middleware(Guard, settings=settings)
    app.add_middleware(
        RequestMetrics, routes=lambda: [r for x in app.state.routers for r in x.routes]
    )
    app.state.routers = [
        module.router
        for module in (
            routes_ops,
            routes_subscribers,
            routes_signups,
            routes_preview,
            routes_cap,  # before routes_alerts: the same path, for CAP bodies only
            routes_alerts,
            routes_cap_messages,
            routes_zones,
            routes_templates,
            routes_tips,
            routes_audit,
            routes_stats,
            routes_callbacks,
            routes_inbound,
        )
    ]
    if settings.web_pages:
        app.state.routers.append(web_routes.router)
    for router in app.state.routers:
        app.include_router(router)
    return app


class BroadcasterApi(FastAPI):
    """The FastAPI app, with POST /v1/callbacks/{gateway} and POST /v1/inbound/{gateway}
    answered before FastAPI's machinery.

    Gateways post one callback per SMS, so this is the API's busiest path by far, and the
    answers to an alert come as fast as citizens type; FastAPI's per-request work (telemetry
    checks, middleware, routing, request objects, dependencies) cost more than verifying a
    receipt and committing it with the group commit of `ReceiptWriter` (`InboundWriter` for
    inbound SMS). Everything else, other methods on the same paths included, goes through
    FastAPI. Errors are problem+json as elsewhere."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = route_path(scope)
            if path.startswith(CALLBACK_PREFIX):
                gateway = path[len(CALLBACK_PREFIX) :]
                if gateway and "/" not in gateway:
                    await self._callback(gateway, scope, receive, send)
                    return
            elif path.startswith(INBOUND_PREFIX):
                gateway = path[len(INBOUND_PREFIX) :]
                if gateway and "/" not in gateway:
                    await self._callback(gateway, scope, receive, send, inbound=True)
                    return
        await super().__call__(scope, receive, send)

    async def _callback(
        self, gateway: str, scope: Scope, receive: Receive, send: Send, *, inbound: bool = False
    ) -> None:
        settings: Settings = self.state.settings
        limit = settings.max_callback_bytes
        headers = Headers(scope=scope)
        try:
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise Problem(413, "Content too large", f"a callback is at most {limit} bytes")
            body = await read_body(receive, limit)
            if body is None:
                return  # the client went away
            adapter = self.state.adapters.get(gateway)
            # Only adapters that check the URL (Twilio signs it) get it: building it is not free.
            url = str(URL(scope=scope)) if getattr(adapter, "callback_uses_url", True) else ""
            if inbound:
                content_type, answer = await receive_inbound(self, gateway, headers, body, url)
            else:
                stored = await receive_callback(self, gateway, headers, body, url)
                content_type, answer = "application/json", b'{"received":%d}' % stored
        except Problem as exc:
            # A 413 leaves the rest of the body unread: the connection cannot go on.
            await send_problem(send, scope, exc, close=exc.status == 413 and body_pending(headers))
            return
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            problem = Problem(
                500, "Internal error", "an unexpected error occurred; it has been logged"
            )
            await send_problem(send, scope, problem, close=True)
            return
        await send_response(send, 200, answer, content_type.encode())
