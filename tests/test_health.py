"""/healthz answers without the database; /readyz says whether the database is reachable and
every migration this code knows is applied."""

from __future__ import annotations

import asyncpg
import httpx
from tests.test_api import client as client

from broadcaster.migrate import load_migrations


async def test_readyz_names_a_missing_migration_and_healthz_stays_up(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    last = load_migrations()[-1]
    await pool.execute("DELETE FROM schema_migrations WHERE version = $1", last.version)
    try:
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert last.name in r.json()["detail"]
        assert (await client.get("/healthz")).json() == {"status": "ok"}
    finally:
        await pool.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            last.version,
            last.name,
        )
    assert (await client.get("/readyz")).status_code == 200


async def test_healthz_needs_no_database(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    # Every connection of the app's pool taken: /readyz waits and answers 503, /healthz at once.
    app_pool = client._transport.app.state.pool  # type: ignore[attr-defined]
    held = [await app_pool.acquire() for _ in range(app_pool.get_max_size())]
    try:
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    finally:
        for conn in held:
            await app_pool.release(conn)
