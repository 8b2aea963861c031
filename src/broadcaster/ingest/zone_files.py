"""Zones from GeoJSON files: `broadcaster import-zones FILE` and the boundaries shipped with the
service (src/broadcaster/data/), which `broadcaster migrate` loads.

The shipped files are loaded by content: each version of a file once (its SHA-256 is recorded in
shipped_data), in the migration's transaction-per-step manner under the migration lock, so every
deployment has them after `broadcaster migrate` and a new version of a file reaches every
deployment the same way. A shipped zone that an operator has since written (through the API or
an import) is left as the operator made it, and so is a shipped feature whose name an operator's
zone already has: the operator knows their district better than a 2014 data set.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path

import asyncpg
from pydantic import TypeAdapter, ValidationError

from broadcaster.api.problems import error_location
from broadcaster.api.zone_schema import Zones, zone_inputs
from broadcaster.ingest.zones import (
    PreparedZone,
    StoredZone,
    ZoneError,
    ZoneInput,
    prepare,
    store,
)

SHIPPED_FILES = ("nordsjaelland_municipalities.geojson", "nordsjaelland_postal_codes.geojson")
_ZONES: TypeAdapter[object] = TypeAdapter(Zones)


def read_zones(data: bytes, name: str) -> tuple[list[ZoneInput], str | None]:
    """The zones of a GeoJSON Feature or FeatureCollection; ZoneError with one line naming the
    file and the place at fault."""
    try:
        body = _ZONES.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise ZoneError(f"{name}: not valid JSON ({first['msg']})") from None
        raise ZoneError(f"{name}: {error_location(first)}: {first['msg']}") from None
    return zone_inputs(body)  # type: ignore[arg-type]


def summary(stored: Iterable[StoredZone]) -> str:
    counts: dict[str, int] = {}
    for s in stored:
        counts[s.result] = counts.get(s.result, 0) + 1
    order = ("created", "updated", "unchanged", "kept")
    return ", ".join(f"{counts.get(r, 0)} {r}" for r in order if counts.get(r) or r != "kept")


def prepare_file(path: Path) -> tuple[list[PreparedZone], str | None]:
    """Read and check a GeoJSON file of zones; ZoneError with one line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ZoneError(f"cannot read {path}: {exc.strerror or exc}") from None
    inputs, where = read_zones(data, path.name)
    try:
        return prepare(inputs, where), where
    except ZoneError as exc:
        raise ZoneError(f"{path.name}: {exc}; nothing was imported") from None


async def import_file(conn: asyncpg.Connection, path: Path) -> list[StoredZone]:
    """Create or update the zones of a GeoJSON file in one transaction (all or nothing)."""
    prepared, where = await asyncio.to_thread(prepare_file, path)
    try:
        return await store(conn, prepared, "import", where=where)
    except ZoneError as exc:
        raise ZoneError(f"{path.name}: {exc}; nothing was imported") from None


async def import_command(url: str, path: Path) -> int:
    """`broadcaster import-zones FILE`: import and print one summary line."""
    from broadcaster.database import connect
    from broadcaster.migrate import ensure_migrated

    conn = await connect(url)
    try:
        await ensure_migrated(conn)
        stored = await import_file(conn, path)
    finally:
        await conn.close()
    print(f"imported {path.name}: {len(stored)} zone(s): {summary(stored)}")
    return 0


# ---------------------------------------------------------------- shipped data


def _shipped(name: str) -> bytes:
    return resources.files("broadcaster.data").joinpath(name).read_bytes()


@cache
def _digest(name: str) -> bytes:
    return hashlib.sha256(_shipped(name)).digest()


async def shipped_pending(conn: asyncpg.Connection) -> list[str]:
    """Shipped files not loaded in their current version (all when the table is missing)."""
    if not await conn.fetchval("SELECT to_regclass('shipped_data') IS NOT NULL"):
        return list(SHIPPED_FILES)
    loaded = {r["name"]: bytes(r["sha256"]) for r in await conn.fetch("TABLE shipped_data")}
    return [name for name in SHIPPED_FILES if loaded.get(name) != _digest(name)]


async def load_shipped(conn: asyncpg.Connection) -> list[str]:
    """Load the shipped files that changed since they were last loaded (the caller holds the
    migration lock); one line per file loaded."""
    done = []
    for name in await shipped_pending(conn):
        data = _shipped(name)
        inputs, where = read_zones(data, name)
        prepared = prepare(inputs, where)
        async with conn.transaction():
            stored = await store(conn, prepared, "shipped", keep_changed=True, where=where)
            await conn.execute(
                """INSERT INTO shipped_data (name, sha256) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE SET sha256 = $2, loaded_at = now()""",
                name,
                hashlib.sha256(data).digest(),
            )
        done.append(f"{name} ({len(stored)} zones: {summary(stored)})")
    return done
