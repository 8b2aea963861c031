"""Leaving with a one-time code (the web page's way out; STOP by SMS needs none, as the SMS comes
from the number itself).

A citizen gives the number; when it is signed up (active, or pending with a sign-up waiting) the
service sends it a code by SMS, and the right code opts the number out with the same effect as
STOP (inbound.stop: opted out, queued deliveries cancelled, the STOP text as confirmation). The
page says the same whether or not the number is signed up, and no SMS goes to a number that is
not, so the page tells nobody whether a number is on the list.

Codes are made, hashed and limited in tries as sign-up codes are (codes.py), and throttled as
they are (throttle.py: the same settings, their own counters per number and client, the same
code-attempts counter per client).
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from broadcaster.citizens import codes, inbound, throttle
from broadcaster.citizens.codes import SignupError
from broadcaster.citizens.notices import send_notice
from broadcaster.citizens.texts import text
from broadcaster.settings import Settings

OPT_OUT_REASON = "leave page"

# Numbers that may leave: those that get, or are about to get, alerts.
FIND = """
SELECT id, language FROM subscribers WHERE phone = $1 AND status IN ('active', 'pending')
"""

CLOSE_OPEN = """
UPDATE leave_requests SET expires_at = least(expires_at, now())
WHERE subscriber_id = $1 AND done_at IS NULL AND expires_at > now()
"""

INSERT_REQUEST = """
INSERT INTO leave_requests (subscriber_id, code_hash, expires_at) VALUES ($1, $2, $3)
"""

LATEST = """
SELECT r.id, r.code_hash, r.attempts, r.expires_at <= now() AS expired,
       r.done_at IS NOT NULL AS done, s.language
FROM leave_requests r JOIN subscribers s ON s.id = r.subscriber_id
WHERE s.phone = $1
ORDER BY r.id DESC
LIMIT 1
FOR UPDATE OF r
"""

COUNT_ATTEMPT = "UPDATE leave_requests SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts"

DONE = "UPDATE leave_requests SET done_at = now() WHERE id = $1"

# Retention: requests a day past their expiry are of no use.
FORGET_OLD = "DELETE FROM leave_requests WHERE expires_at < now() - interval '1 day'"


async def start(conn: asyncpg.Connection, settings: Settings, *, phone: str, client: str) -> int:
    """Send a leave code to the number if it is signed up; returns the code's lifetime in
    seconds either way. Raises throttle.Throttled (counted whether or not the number is known,
    so the throttle tells nothing either)."""
    await throttle.hit(conn, "leave-sms-number", phone, settings.signup_sms_per_number)
    await throttle.hit(conn, "leave-sms-client", client, settings.signup_sms_per_client)
    async with conn.transaction():
        found = await conn.fetchrow(FIND, phone)
        if found is not None:
            code = codes.issue(settings, phone)
            await conn.execute(CLOSE_OPEN, found["id"])
            await conn.execute(INSERT_REQUEST, found["id"], code.hash, code.expires_at)
            await codes.send(conn, settings, found["id"], code, found["language"], "leave-code")
    return int(codes.lifetime(settings).total_seconds())


async def confirm(
    conn: asyncpg.Connection, settings: Settings, *, phone: str, code: str, client: str
) -> None:
    """Opt the number out if the code is its latest leave code; raise SignupError (kinds as in
    signups.confirm, but a number without a request gets `wrong`, as a wrong code does),
    TooManyAttempts or throttle.Throttled."""
    await throttle.hit(conn, "code-attempts-client", client, settings.code_attempts_per_client)
    async with conn.transaction():
        row = await conn.fetchrow(LATEST, phone)
        if row is None or row["done"]:
            raise SignupError("code", "the code is not right", "wrong")
        right = codes.check(row, phone, code)
        if right:
            await conn.execute(DONE, row["id"])
            subscriber_id = await inbound.stop(conn, phone, row["language"], OPT_OUT_REASON)
            confirmation = text("stop", row["language"], settings.organisation)
            expires_at = datetime.now(UTC) + inbound.REPLY_LIFETIME
            await send_notice(conn, subscriber_id, confirmation, "stop", expires_at)
        else:
            # Committed with the transaction: a wrong code costs a try though this raises after.
            attempts = await conn.fetchval(COUNT_ATTEMPT, row["id"])
    if not right:
        raise codes.wrong(attempts, "the code is not right")
