"""API requests counted and timed by route template (`/v1/alerts/{alert_id}`, never the path
itself: label values stay a small fixed set). Gateway callbacks and inbound SMS are answered
before this middleware (app.py's fast path) and counted per group commit instead."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster.ops import metrics


class RequestMetrics:
    """Outermost ASGI middleware: sees every answer, the guard's early 401 and 413 included."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self._routes = routes
        self._table: Sequence[BaseRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self.template(scope)
            metrics.API_REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.API_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)

    def template(self, scope: Scope) -> str:
        """The route the router chose; for a request answered before routing (no key, too
        large), the route it would have gone to; `unmatched` when none would."""
        route = scope.get("route")
        if route is None:
            if self._table is None:
                self._table = self._routes()
            for candidate in self._table:
                if candidate.matches(scope)[0] != Match.NONE:
                    route = candidate
                    break
        # path_format drops convertors: /v1/alerts/{alert_id:alert_id} is /v1/alerts/{alert_id}.
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        return path if isinstance(path, str) else "unmatched"
