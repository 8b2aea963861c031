"""What every request meets before the app reads its body.

- The API key (`Authorization: Bearer ...`) of every /v1 route but the gateway callbacks and
  inbound SMS (both signed by the gateway) is checked from the headers alone, so a request
  without a valid key costs one indexed lookup and is answered 401 without its body being read
  (large bodies sent without a key once took the process from 111 to 685 MB). The key found is
  left in the request's state for `require`, which checks its scope.
- The body's size: a Content-Length over the route's limit is answered 413 before anything is
  read; a chunked body is counted while it streams and refused once it goes over.
- Every request gets an id (the caller's X-Request-ID, or a new one), answered in X-Request-ID
  and recorded with audited actions.
- The citizens' web pages (web/) need no key; what the Guard refuses there (a body too large)
  and an error that escapes them is answered as a page in the page's language, not JSON.
- An error that escapes the app is answered 500 problem+json here, with `Connection: close`,
  instead of being re-raised (which made the server drop the keep-alive connection without a
  word, so the client could not know whether its POST was taken).

An answer given before the body was read says `Connection: close`: the body is still on its way
and the connection cannot carry another request.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster.api.problems import Problem, database_problem, internal_error, send_problem
from broadcaster.auth import find_api_key
from broadcaster.citizens import throttle
from broadcaster.ops import logs
from broadcaster.settings import Settings
from broadcaster.web.pages import PAGE_PATHS, send_error_page

log = logging.getLogger(__name__)

# A caller's X-Request-ID is kept when it looks like an id; else one is made. Either way it is
# answered in X-Request-ID and recorded with audited actions.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")

WRITE_WINDOW = timedelta(minutes=1)

# Routes under this prefix need a key, except the gateways' callbacks and inbound SMS (signed by
# the gateway).
KEYED_PREFIX = "/v1/"
UNKEYED_PREFIXES = ("/v1/callbacks/", "/v1/inbound/")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body goes over its limit. An HTTPException, so
    FastAPI passes it on from its body parsing (it turns other errors there into 400s) and the
    problem handler answers it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is larger than {limit} bytes", {"Connection": "close"}
        )


def route_path(scope: Scope) -> str:
    """The path without the root path, as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def counts_as_write(method: str, path: str) -> bool:
    """Writes count against a key's rate (BROADCASTER_WRITES_PER_KEY_PER_MINUTE), except sign-ups:
    one front-end key carries every citizen's, and they have throttles of their own."""
    return method not in ("GET", "HEAD", "OPTIONS") and not path.startswith("/v1/signups")


def needs_key(path: str) -> bool:
    return path.startswith(KEYED_PREFIX) and not path.startswith(UNKEYED_PREFIXES)


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest body a route takes: alerts and zones carry polygons, gateways' posts what
    their provider sends, everything else is small."""
    if method == "POST" and path in ("/v1/alerts", "/v1/alerts/preview"):
        return settings.max_alert_bytes
    if method == "POST" and path == "/v1/zones":
        return settings.max_zone_bytes
    if path.startswith(UNKEYED_PREFIXES):
        return settings.max_callback_bytes
    return settings.max_body_bytes


class Guard:
    """ASGI middleware: key, body size, last-resort 500 (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        headers = Headers(scope=scope)
        limit = body_limit(self.settings, scope["method"], path)
        request_id = headers.get("x-request-id", "")
        if not REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        send = _tagged(send, (b"x-request-id", request_id.encode()))
        token = logs.REQUEST_ID.set(request_id)  # every line logged for the request carries it
        try:
            await self._guarded(scope, receive, send, path, headers, limit)
        finally:
            logs.REQUEST_ID.reset(token)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, path: str, headers: Headers, limit: int
    ) -> None:
        try:
            if needs_key(path):
                scope.setdefault("state", {})["api_key"] = await self._authenticate(scope, headers)
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise Problem(
                    413, "Content too large", f"the request body is larger than {limit} bytes"
                )
        except Problem as exc:
            if path in PAGE_PATHS:  # a citizen's browser: a page, not JSON
                await send_error_page(
                    scope, receive, send, self.settings, exc.status, body_pending(headers)
                )
                return
            await send_problem(send, scope, exc, close=body_pending(headers))
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, _counted(receive, limit), watched)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not started and path in PAGE_PATHS:
                await send_error_page(scope, receive, send, self.settings, 500, True)
            elif not started:
                await send_problem(send, scope, internal_error(), close=True)

    async def _authenticate(self, scope: Scope, headers: Headers) -> Any:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "Unauthorized",
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            async with scope["app"].state.database.connection() as conn:
                key = await find_api_key(conn, token.strip())
                if key is not None and counts_as_write(scope["method"], route_path(scope)):
                    await throttle.hit(
                        conn,
                        "key-writes",
                        str(key.id),
                        self.settings.writes_per_key_per_minute,
                        WRITE_WINDOW,
                    )
        except throttle.Throttled as exc:
            raise Problem(
                429,
                "Too many requests",
                f"this API key made too many writes; try again in {exc.retry_after} seconds",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        except Exception as exc:
            problem = database_problem(exc)
            if problem is None:
                raise
            raise problem from None
        if key is None:
            raise Problem(
                401,
                "Unauthorized",
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return key


def _tagged(send: Send, header: tuple[bytes, bytes]) -> Send:
    """`send` that adds `header` to the response."""

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), header]
        await send(message)

    return tagged


def body_pending(headers: Headers) -> bool:
    """Whether the request announces a body (which an early answer leaves unread)."""
    length = headers.get("content-length")
    if length is not None:
        return length != "0"
    return "chunked" in headers.get("transfer-encoding", "").lower()


def _counted(receive: Receive, limit: int) -> Callable[[], Any]:
    """`receive` that raises BodyTooLarge once the body passes `limit` bytes."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
