"""Test fixtures: a real PostgreSQL (embedded, or DATABASE_URL), a template database migrated once
per run and cloned per test (CREATE DATABASE ... TEMPLATE), and child processes stopped by PID."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tests.stack import Stack

from broadcaster.database import connect, create_pool, resolve_url
from broadcaster.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
# No quiet hours unless a test asks for them: otherwise every test that sends a normal alert
# would pass by day and wait for the morning by night. Child processes inherit this.
os.environ.setdefault("BROADCASTER_QUIET_HOURS_START", "00:00")
os.environ.setdefault("BROADCASTER_QUIET_HOURS_END", "00:00")
_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the server the suite runs against (its maintenance database)."""
    data_dir = Path(os.environ.get("BROADCASTER_DATA_DIR", ROOT / ".data"))
    return resolve_url(os.environ.get("DATABASE_URL"), data_dir)


@pytest.fixture(scope="session")
async def template_db(server_url: str) -> AsyncIterator[str]:
    name = f"broadcaster_tmpl_{os.getpid()}"
    admin = await connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await connect(with_database(server_url, name))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"broadcaster_t{os.getpid()}_{next(_counter)}"
    admin = await connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield with_database(server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(db_url, min_size=1, max_size=8)
    yield p
    await asyncio.wait_for(p.close(), 10)


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs"
    path.mkdir()
    yield path


@pytest.fixture
def stack(db_url: str, log_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(db_url, log_dir, tmp_path)
    try:
        yield s
    finally:
        for child in reversed(s.children):
            child.stop()
