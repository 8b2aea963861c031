"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from broadcaster.api.area_schema import UNION_TAGS
from broadcaster.database import (
    BUSY,
    DISK_FULL,
    OUT_OF_RESOURCES,
    UNAVAILABLE,
    describe_error,
    is_unstorable,
    trouble,
)
from broadcaster.web.pages import not_found_page, pages_language

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.headers = headers
        self.extra = extra


def internal_error() -> Problem:
    """The answer to a fault of ours: the details go to the log, not to the client."""
    return Problem(500, "Internal error", "an unexpected error occurred; it has been logged")


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    """A field's place as a reader writes it: "area.coordinates[0][1]" for pydantic's
    ("body", "area", "Polygon", "coordinates", 0, 1)."""
    out = ""
    for part in loc:
        if (part == "body" and not out) or part in UNION_TAGS:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def error_location(error: Any) -> str:
    """Where a pydantic error is, as a reader writes it."""
    where = _location(error["loc"])
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        # The error is the discriminating member's, though pydantic places it on the union.
        where += "." + str(error.get("ctx", {}).get("discriminator", "type")).strip("'")
    elif error.get("type") == "area_kind" and isinstance(error.get("input"), dict):
        if "type" in error["input"]:
            where += ".type"
    return where


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            exc.title,
            exc.detail,
            type_=exc.type,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(
                request, 400, "Malformed JSON", "the request body is not valid JSON"
            )
        first = errors[0]
        detail = f"{error_location(first)}: {first['msg']}"
        listed = [{"location": error_location(e), "message": e["msg"]} for e in errors]
        return problem_response(request, 422, "Invalid request", detail, errors=listed)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            # Under the citizens' pages a browser asked: a page in their language, not JSON.
            path = request.url.path.removeprefix(request.scope.get("root_path", ""))
            settings = request.app.state.settings
            language = pages_language(path)
            if language is not None and settings.web_pages:
                return not_found_page(request, settings, language)
        title = {400: "Bad request", 404: "Not found", 405: "Method not allowed"}.get(
            exc.status_code, "Error"
        )
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only.
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return problem_response(request, exc.status_code, title, str(exc.detail), headers=headers)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        problem = database_problem(exc)
        if problem is None:
            log.error("database error on %s: %s", request.url.path, describe_error(exc))
            problem = Problem(
                500, "Internal error", "an unexpected error occurred; it has been logged"
            )
        elif problem.status == 503 and isinstance(exc, TimeoutError):
            # An outage is logged once, by deps.Database; a connection not had in time (the
            # pool busy, or the database slow) is not one, and is logged here.
            log.warning("no database connection in time on %s", request.url.path)
        return problem_response(
            request, problem.status, problem.title, problem.detail, headers=problem.headers
        )

    # Everything a database call can raise; database_problem sorts it out. (Errors no handler
    # takes are answered 500 by the Guard, which keeps the connection honest.)
    for kind in DATABASE_ERRORS:
        app.add_exception_handler(kind, _database)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of the app answers on `path`."""
    methods: set[str] = set()
    for router in getattr(app.state, "routers", ()):
        for route in router.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                methods |= set(getattr(route, "methods", ()) or ())
    return sorted(methods)


DATABASE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def database_problem(exc: BaseException) -> Problem | None:
    """The answer to a database error met while serving a request: 503 with Retry-After when
    the database cannot do it for now (away, its disk full, out of memory or connections, a
    statement or lock timeout; each with a title of its own), 422 when a value of the request
    cannot be stored (SQLSTATE class 22, or asyncpg refusing to encode it: a last line of
    defence behind the request models), None for anything else (a fault of ours: 500)."""
    if is_unstorable(exc):
        return Problem(
            422,
            "Invalid value",
            f"a value in the request cannot be stored ({describe_error(exc)})",
        )
    kind = trouble(exc)
    if kind is None:
        return None
    title, detail, retry_after = UNAVAILABLE_ANSWERS[kind]
    return Problem(503, title, detail, headers={"Retry-After": retry_after})


# What a request is answered while the database is in trouble (database.trouble): title,
# detail, Retry-After. A full disk needs someone to free space: no point in trying again at once.
UNAVAILABLE_ANSWERS = {
    UNAVAILABLE: ("Service unavailable", "the database is unavailable; try again", "1"),
    DISK_FULL: (
        "Database cannot write",
        "the database's disk is full, so nothing can be stored now; try again later",
        "10",
    ),
    OUT_OF_RESOURCES: (
        "Database out of resources",
        "the database is short of memory or connections; try again",
        "2",
    ),
    BUSY: (
        "Database busy",
        "the database did not finish in time (a statement timed out or waited too long for a "
        "lock); try again",
        "2",
    ),
}


# -- answers sent straight through ASGI (the guard, the callback fast path) ----------------------


async def send_problem(send: Send, scope: Scope, exc: Problem, *, close: bool = False) -> None:
    """Send `exc` as problem+json; `close` says the connection ends after it (Connection:
    close), for answers given while a request body may still be on its way."""
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
    if close:
        extra.append((b"connection", b"close"))
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
