"""Sign-up with double opt-in: a citizen asks (number, areas, language, why), the service sends a
one-time code to the number, and only the right code makes the subscription active.

- A new number becomes a *pending* subscriber, which never receives alerts. What was asked for
  is kept with the sign-up and applied to the subscriber when the code is confirmed, so nobody
  can change another person's areas, or opt a number back in, without that number's code.
- Codes (codes.py) are six digits, stored as a hash, valid for `code_minutes`, single-use; a
  new sign-up for the number replaces any code still open. They are compared in constant time,
  and a sign-up takes at most MAX_ATTEMPTS tries before a new code is needed.
- Sign-up SMS are throttled per number and per client, code attempts per client
  (throttle.py), so the service cannot be used to spam a number or to guess codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from broadcaster.citizens import codes, places, throttle
from broadcaster.citizens.codes import MAX_ATTEMPTS, SignupError, TooManyAttempts
from broadcaster.ingest.zones import resolve_postal_codes
from broadcaster.settings import Settings

__all__ = ["MAX_ATTEMPTS", "Confirmed", "SignupError", "TooManyAttempts", "confirm", "start"]

UPSERT_PENDING = """
INSERT INTO subscribers (phone, language, status, source) VALUES ($1, $2, 'pending', $3)
ON CONFLICT (phone) DO UPDATE SET updated_at = now()
RETURNING id
"""

CLOSE_OPEN = """
UPDATE signups SET expires_at = least(expires_at, now())
WHERE subscriber_id = $1 AND confirmed_at IS NULL AND expires_at > now()
"""

INSERT_SIGNUP = """
INSERT INTO signups (subscriber_id, locations, language, reason, source, code_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

# The number's latest sign-up: only it can be confirmed (a new one replaces older codes).
LATEST = """
SELECT g.id, g.subscriber_id, g.locations, g.language, g.reason, g.source, g.code_hash,
       g.attempts, g.expires_at <= now() AS expired, g.confirmed_at IS NOT NULL AS confirmed
FROM signups g JOIN subscribers s ON s.id = g.subscriber_id
WHERE s.phone = $1
ORDER BY g.id DESC
LIMIT 1
FOR UPDATE OF g
"""

COUNT_ATTEMPT = "UPDATE signups SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts"

CONFIRM_SIGNUP = "UPDATE signups SET confirmed_at = now() WHERE id = $1"

ACTIVATE = """
UPDATE subscribers
SET status = 'active', language = $2, reason = coalesce($3, reason),
    confirmed_at = now(), opted_out_at = NULL, opt_out_reason = NULL, updated_at = now(),
    source = CASE WHEN status = 'pending' THEN $4 ELSE source END
WHERE id = $1
RETURNING id, phone, language, status
"""


@dataclass(frozen=True)
class Confirmed:
    subscriber_id: int
    phone: str
    language: str
    locations: list[dict[str, Any]]


async def start(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    phone: str,
    locations: list[dict[str, Any]],
    language: str,
    reason: str | None,
    source: str,
    client: str,
) -> int:
    """Record a sign-up and queue its code by SMS; returns the code's lifetime in seconds.
    Raises throttle.Throttled (counted before anything is stored), ingest.zones.UnknownZones for
    a postal code no zone has (before any SMS)."""
    await resolve_postal_codes(conn, [p["postal_code"] for p in locations if "postal_code" in p])
    await throttle.hit(conn, "signup-sms-number", phone, settings.signup_sms_per_number)
    await throttle.hit(conn, "signup-sms-client", client, settings.signup_sms_per_client)
    code = codes.issue(settings, phone)
    async with conn.transaction():
        subscriber_id = await conn.fetchval(UPSERT_PENDING, phone, language, source)
        await conn.execute(CLOSE_OPEN, subscriber_id)
        await conn.execute(
            INSERT_SIGNUP,
            subscriber_id,
            locations,
            language,
            reason,
            source,
            code.hash,
            code.expires_at,
        )
        await codes.send(conn, settings, subscriber_id, code, language, "signup-code")
    return int(codes.lifetime(settings).total_seconds())


async def confirm(
    conn: asyncpg.Connection, settings: Settings, *, phone: str, code: str, client: str
) -> Confirmed:
    """Activate the subscription the code belongs to; raise SignupError (or TooManyAttempts,
    throttle.Throttled). A wrong code counts against the sign-up even though this raises."""
    await throttle.hit(conn, "code-attempts-client", client, settings.code_attempts_per_client)
    async with conn.transaction():
        row = await conn.fetchrow(LATEST, phone)
        if row is None or row["confirmed"]:
            raise SignupError("phone", "no sign-up is waiting for this number", "no_signup")
        right = codes.check(row, phone, code)
        if not right:
            # Counted and committed (nothing raises inside the transaction): a wrong code costs
            # an attempt even though the request fails.
            attempts = await conn.fetchval(COUNT_ATTEMPT, row["id"])
        else:
            await conn.execute(CONFIRM_SIGNUP, row["id"])
            locations = row["locations"]
            subscriber = await conn.fetchrow(
                ACTIVATE, row["subscriber_id"], row["language"], row["reason"], row["source"]
            )
            await places.replace(conn, row["subscriber_id"], locations)
    if not right:
        raise codes.wrong(attempts, "the code is not right; {left} attempt(s) left")
    return Confirmed(subscriber["id"], subscriber["phone"], subscriber["language"], locations)
