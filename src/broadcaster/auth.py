"""API keys: random bearer tokens, stored as SHA-256 hashes, with scopes.

The keys carry 256 bits of randomness, so a fast hash is enough (as for GitHub or Stripe tokens):
nobody can brute-force the preimage, and verification costs one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

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
    conn: asyncpg.Connection, name: str, scopes: list[str] | None = None
) -> str:
    """Store a new key and return it; it cannot be shown again."""
    scopes = list(scopes or SCOPES)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (name, key_hash, scopes) VALUES ($1, $2, $3)",
        name,
        hash_key(key),
        scopes,
    )
    return key


async def find_api_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> ApiKey | None:
    row = await conn.fetchrow(
        "SELECT id, name, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    if row is None:
        return None
    return ApiKey(row["id"], row["name"], frozenset(row["scopes"]))
