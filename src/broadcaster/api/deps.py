"""What routes depend on: the pool, the settings, and an API key with a scope."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request

from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.database import is_outage
from broadcaster.dispatch.outage import OutageWatch
from broadcaster.settings import Settings


class Database:
    """The pool as requests use it: a connection is waited for at most `timeout` seconds, after
    which the request is answered 503 (problems.database_problem), never left hanging while the
    database is away. An outage met here is logged once when it starts and once when a request
    gets through again (`outage`, shared with the receipt writer), not once per request."""

    def __init__(self, pool: asyncpg.Pool, timeout: float, outage: OutageWatch) -> None:
        self.pool = pool
        self.timeout = timeout
        self.outage = outage

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """`async with db.connection() as conn:`"""
        mark = self.outage.attempt()
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                yield conn
        except Exception as exc:
            # A connection not had in time is the pool being busy, not the database away.
            if is_outage(exc) and not isinstance(exc, TimeoutError):
                self.outage.failed(exc, "serving requests")
            raise
        self.outage.ok(mark)


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require(scope: str) -> Any:
    """The request's API key (checked from the headers by the Guard before the body was read),
    with `scope` among its scopes (403 otherwise)."""

    async def check(request: Request) -> ApiKey:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is None:  # a route outside the Guard's keyed paths: a wiring error of ours
            raise Problem(401, "Unauthorized", "an API key is required")
        if scope not in key.scopes:
            raise Problem(403, "Forbidden", f"the API key lacks the scope {scope!r}")
        return key

    check.scope = scope  # type: ignore[attr-defined]  # read by tests walking the routes
    return Depends(check)


def required_scope(route: Any) -> str | None:
    """The scope a route's `require(...)` asks for, or None for a route without a key."""
    dependant = getattr(route, "dependant", None)
    for dependency in dependant.dependencies if dependant is not None else []:
        scope = getattr(dependency.call, "scope", None)
        if scope is not None:
            return str(scope)
    return None


def request_id(request: Request) -> str:
    """The request's id (the Guard gives every request one)."""
    return str(getattr(request.state, "request_id", ""))


RequestId = Annotated[str, Depends(request_id)]
