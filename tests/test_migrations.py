"""Migrations: applied in order, recorded, idempotent, safe when two run at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from tests.conftest import with_database

from broadcaster.database import DatabaseUnavailable, connect
from broadcaster.ingest.zone_files import SHIPPED_FILES
from broadcaster.migrate import (
    NotMigrated,
    apply_migrations,
    ensure_migrated,
    load_migrations,
    pending_migrations,
)


async def test_template_is_fully_migrated(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await pending_migrations(conn) == []
        versions = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
    assert versions == [m.version for m in load_migrations()]


async def test_running_twice_is_a_noop(db_url: str) -> None:
    conn = await connect(db_url)
    try:
        assert await apply_migrations(conn) == []
    finally:
        await conn.close()


async def test_two_migrators_at_once_on_an_empty_database(server_url: str) -> None:
    name = "broadcaster_race_test"
    admin = await connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        conns = [await connect(url), await connect(url)]
        with pytest.raises(NotMigrated, match="broadcaster migrate"):
            await ensure_migrated(conns[0])
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        # One did the work (the SQL migrations and the shipped zones), the other waited on the
        # advisory lock and found nothing to do.
        assert sorted(len(r) for r in results) == [0, len(load_migrations()) + len(SHIPPED_FILES)]
        await ensure_migrated(conns[1])
        for c in conns:
            await c.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_unreachable_server_gives_one_line_naming_the_host() -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        await connect("postgresql://postgres@127.0.0.1:1/nowhere")
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "\n" not in message
