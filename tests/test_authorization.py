"""The authorization matrix, generated from the route table: every keyed route x (no key, an
unknown key, a revoked key, a key with each single scope) gives 401, 401, 401, and 403 for every
scope but the route's own, with which it passes the key check. A route added later is covered
without touching this file; a keyed route without a scope fails it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from tests.test_api import assert_problem, auth
from tests.test_api import client as client

from broadcaster.api.app import create_app
from broadcaster.api.deps import required_scope
from broadcaster.api.guard import needs_key
from broadcaster.auth import SCOPES, create_api_key, revoke_api_key
from broadcaster.settings import load_settings


def keyed_routes() -> list[tuple[str, str, str]]:
    """(method, path with sample parameters, scope) of every route the Guard keys."""
    app = create_app(load_settings(), "postgresql://unused")
    found = []
    for router in app.state.routers:
        for route in router.routes:
            if not needs_key(route.path):
                continue
            scope = required_scope(route)
            assert scope is not None, f"{route.path} is keyed but asks for no scope"
            path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: SAMPLES.get(m.group(1), "1"), route.path)
            for method in sorted(route.methods):
                found.append((method, path, scope))
    return found


SAMPLES = {"alert_id": "1", "phone": "%2B4520123456", "gateway": "primary", "zone_id": "1"}
ROUTES = keyed_routes()


def test_every_scope_guards_something_and_the_table_is_not_empty() -> None:
    assert len(ROUTES) >= 8
    used = {scope for _, _, scope in ROUTES}
    assert used <= set(SCOPES)
    assert {"alerts:write", "alerts:read", "subscribers:write", "admin"} <= used


# Every route that needs no key, by name: a new one must be added here on purpose. The web pages
# (web/routes.py) are the citizens' sign-up, confirm and leave, and their stylesheet and script.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/callbacks/{gateway}",
    "/v1/inbound/{gateway}",
    "/tilmeld",
    "/tilmeld/kode",
    "/afmeld",
    "/afmeld/kode",
    "/en/signup",
    "/en/signup/code",
    "/en/leave",
    "/en/leave/code",
    "/assets/{name}",
}


def test_the_routes_without_a_key_are_these_and_no_more() -> None:
    app = create_app(load_settings(), "postgresql://unused")
    unkeyed = {
        route.path
        for router in app.state.routers
        for route in router.routes
        if not needs_key(route.path)
    }
    assert unkeyed == PUBLIC


@pytest.fixture
async def keys(pool: asyncpg.Pool) -> AsyncIterator[dict[str, str]]:
    async with pool.acquire() as conn:
        made = {scope: await create_api_key(conn, f"only-{scope}", [scope]) for scope in SCOPES}
        made["revoked"] = await create_api_key(conn, "revoked")
        await revoke_api_key(conn, "revoked")
    yield made


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
async def test_route_x_key(
    client: httpx.AsyncClient,
    keys: dict[str, str],
    method: str,
    path: str,
    scope: str,
) -> None:
    r = await client.request(method, path, json={})
    assert_problem(r, 401, "api key")
    r = await client.request(method, path, json={}, headers=auth("bk_unknown"))
    assert_problem(r, 401, "not valid")
    r = await client.request(method, path, json={}, headers=auth(keys["revoked"]))
    assert_problem(r, 401, "not valid")
    for other in SCOPES:
        r = await client.request(method, path, json={}, headers=auth(keys[other]))
        if other == scope:
            assert r.status_code not in (401, 403), (method, path, other, r.text)
        else:
            assert_problem(r, 403, scope)


async def test_writes_are_rate_limited_per_key(db_url: str, pool: asyncpg.Pool) -> None:
    settings = load_settings(database_url=db_url, writes_per_key_per_minute=3)
    app = create_app(settings, db_url)
    async with pool.acquire() as conn:
        busy = await create_api_key(conn, "busy")
        calm = await create_api_key(conn, "calm")
    body = {"message": "x", "area": {"type": "Circle", "center": [12.3, 55.9], "radius_m": 10}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            codes = [
                (await c.post("/v1/alerts", headers=auth(busy), json=body)).status_code
                for _ in range(4)
            ]
            # A fourth in the same minute (unless the minute turned meanwhile).
            assert codes[:3] == [202] * 3 and codes[3] in (429, 202)
            if codes[3] == 429:
                r = await c.post("/v1/alerts", headers=auth(busy), json=body)
                assert_problem(r, 429, "too many writes")
                assert 0 < int(r.headers["retry-after"]) <= 60
                assert await pool.fetchval("SELECT count(*) FROM alerts") == 3
            # Reads are not counted, nor are other keys' writes.
            assert (await c.get("/v1/alerts", headers=auth(busy))).status_code == 200
            assert (await c.post("/v1/alerts", headers=auth(calm), json=body)).status_code == 202
