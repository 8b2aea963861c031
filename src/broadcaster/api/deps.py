"""What routes depend on: the pool, the settings, and an API key with a scope."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request

from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey, find_api_key
from broadcaster.settings import Settings


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
