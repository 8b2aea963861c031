"""Numbered SQL migrations, applied in order, each in its own transaction, under an advisory lock
so that two pods starting together cannot race. Applied versions are kept in schema_migrations.
After them, under the same lock, the zones shipped with the service are loaded where their
files changed (ingest/zone_files.py); a database is migrated when both are done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

# Any constant works as long as every process agrees on it.
MIGRATION_LOCK_ID = 0x42524F4144  # "BROAD"

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class NotMigrated(Exception):
    """The database lacks migrations this code needs."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    """The packaged copy in a wheel, or the repository's migrations/ in a source checkout."""
    packaged = Path(__file__).with_name("migrations")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            continue
        found.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.name)
        from broadcaster.ingest.zone_files import load_shipped

        applied_now += [f"zones from {loaded}" for loaded in await load_shipped(conn)]
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    from broadcaster.ingest.zone_files import shipped_pending

    pending = [m.name for m in load_migrations() if m.version not in done]
    return pending + [f"zones from {name}" for name in await shipped_pending(conn)]


async def ensure_migrated(conn: asyncpg.Connection) -> None:
    pending = await pending_migrations(conn)
    if pending:
        raise NotMigrated(
            f"the database is not migrated ({len(pending)} pending, first {pending[0]}); "
            "run 'broadcaster migrate' first"
        )
