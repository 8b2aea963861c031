"""API keys: random bearer tokens, stored as SHA-256 hashes, with scopes.

The keys carry 256 bits of randomness, so a fast hash is enough (as for GitHub or Stripe tokens):
nobody can brute-force the preimage, and verification costs one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from broadcaster.ops import audit

SCOPES = (
    "alerts:write",
    "alerts:read",
    "subscribers:write",
    "subscribers:read",
    "tips:read",
    # A public sign-up front end holds a key that can do this and nothing else.
    "signups:write",
    "admin",
)
KEY_PREFIX = "bk_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    scopes: frozenset[str]


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(
    conn: asyncpg.Connection, name: str, scopes: list[str] | None = None, actor: str = "cli"
) -> str:
    """Store a new key (audited) and return it; it cannot be shown again."""
    scopes = list(scopes or SCOPES)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        key_id = await conn.fetchval(
            "INSERT INTO api_keys (name, key_hash, scopes) VALUES ($1, $2, $3) RETURNING id",
            name,
            hash_key(key),
            scopes,
        )
        await audit.record(
            conn, actor, audit.KEY_CREATED, f"api_key:{key_id}", details={"name": name}
        )
    return key


async def list_api_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY id"
    )


async def revoke_api_key(conn: asyncpg.Connection, which: str, actor: str = "cli") -> int:
    """Revoke the key with this id, or the one active key with this name (audited); effective
    at once (every request looks its key up). Returns the id; ValueError when none or several
    match."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT id FROM api_keys
               WHERE (id::text = $1 OR name = $1) AND revoked_at IS NULL FOR UPDATE""",
            which,
        )
        if not rows:
            raise ValueError(f"no active API key with the id or name {which!r}")
        if len(rows) > 1:
            ids = ", ".join(str(r["id"]) for r in rows)
            raise ValueError(f"several active keys are named {which!r} (ids {ids}); give an id")
        key_id = int(rows[0]["id"])
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)
        await audit.record(conn, actor, audit.KEY_REVOKED, f"api_key:{key_id}")
    return key_id


async def find_api_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> ApiKey | None:
    row = await conn.fetchrow(
        "SELECT id, name, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    if row is None:
        return None
    return ApiKey(row["id"], row["name"], frozenset(row["scopes"]))
