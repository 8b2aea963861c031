"""The webhook outbox: what the service posts to other systems, signed, until they acknowledge
it (any 2xx). Two kinds share it (`webhook_outbox.kind`):

- `tip`: every tip linked to an alert that carries a `tip_webhook`, to that URL (the
  investigating system). The tip and its row are written in one transaction (inbound.py); the
  body is built when posted (`tip_id`, `alert_id`, `alert_reference`, `received_at`, `text`,
  `sender` in E.164: the investigators may need to call the tipster back), so a tip erased or
  deleted meanwhile takes its row with it;
- `outcome`: an alert's counts when it ends, to its `status_webhook` (dispatch/outcomes.py
  writes the row with the body as it was then).

A row is never lost while the receiver is down or the dispatcher restarts. The dispatcher
process drains the outbox (`run`, one loop per dispatcher process; several processes share the
rows):

- due rows are leased (`due_at` moved `LEASE_SECONDS` ahead) in one statement with
  `FOR UPDATE SKIP LOCKED`, so a row is posted by one process at a time, and a process that
  dies leaves its rows due again when the lease ends; no transaction stays open while posting;
- each is POSTed as JSON with `X-Broadcaster-Signature: sha256=<hex HMAC-SHA256 of the body>`
  keyed with BROADCASTER_WEBHOOK_SECRET, and `X-Broadcaster-Event` (`tip`, `alert.completed`,
  `alert.cancelled`, `alert.expired`); redirects are not followed;
- a 2xx deletes the row (and stamps `inbound_messages.forwarded_at` for a tip); anything else
  (an error status, a timeout, a refused connection) is tried again after
  `tip_retry_base_seconds` doubled per attempt (with up to 10 % jitter), at most
  `tip_retry_max_seconds` apart, for as long as it takes. Without a secret nothing is posted:
  the rows wait, and an error is logged.

Delivery is at least once: a 2xx whose deletion is lost (the process dies in between) is posted
again, so receivers key on `tip_id`, or on `alert_id` and the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from broadcaster.ops import metrics
from broadcaster.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Broadcaster-Signature"
EVENT_HEADER = "X-Broadcaster-Event"
LEASE_SECONDS = 60.0  # longer than a post may take (REQUEST_TIMEOUT)
REQUEST_TIMEOUT = 10.0
BATCH = 50

# A tip's fields come from its message and alert (NULL for an outcome, which has its body).
LEASE = """
WITH leased AS (
    UPDATE webhook_outbox o SET due_at = now() + $2 * interval '1 second'
    WHERE o.id = ANY(ARRAY(SELECT id FROM webhook_outbox WHERE due_at <= now()
                           ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING o.id, o.kind, o.url, o.attempts, o.inbound_message_id, o.body
)
SELECT l.id, l.kind, l.url, l.attempts, l.body, m.id AS tip_id, m.alert_id, a.reference,
       m.received_at, m.text, m.phone
FROM leased l
LEFT JOIN inbound_messages m ON m.id = l.inbound_message_id
LEFT JOIN alerts a ON a.id = m.alert_id
"""

WAITING = "SELECT EXISTS (SELECT 1 FROM webhook_outbox)"

DELIVERED = """
WITH gone AS (
    DELETE FROM webhook_outbox WHERE id = ANY($1::bigint[]) RETURNING inbound_message_id
)
UPDATE inbound_messages SET forwarded_at = now()
WHERE id = ANY(ARRAY(SELECT inbound_message_id FROM gone WHERE inbound_message_id IS NOT NULL))
"""

RETRY = """
UPDATE webhook_outbox o
SET attempts = o.attempts + 1, due_at = now() + r.delay * interval '1 second', last_error = r.error
FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS r(id, delay, error)
WHERE o.id = r.id
"""


def signature(secret: str, body: bytes) -> str:
    """The value of X-Broadcaster-Signature for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(row: Any) -> bytes:
    """The JSON a row is posted as (compact, UTF-8: the signature covers these bytes)."""
    if row["kind"] == "tip":
        content = {
            "tip_id": row["tip_id"],
            "alert_id": row["alert_id"],
            "alert_reference": row["reference"],
            "received_at": row["received_at"].isoformat(),
            "text": row["text"],
            "sender": row["phone"],
        }
    else:
        content = row["body"]
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def event_of(row: Any) -> str:
    """The value of X-Broadcaster-Event: what the body is about."""
    return "tip" if row["kind"] == "tip" else str(row["body"]["event"])


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after `attempts` failed ones (1 after the first failure)."""
    delay = min(cap, base * 2 ** min(max(attempts - 1, 0), 30))
    return delay * (1 + random.random() / 10)


class Poster:
    """Posts due outbox rows (see the module docstring); `post_due` is one pass."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._warned = False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_due(self) -> int:
        """Post the rows due now (at most BATCH); returns how many were tried."""
        secret = self.settings.webhook_secret
        if not secret:
            # Said once, when there is something to post (alerts were given a webhook by an API
            # process that has the secret).
            if not self._warned and await self.pool.fetchval(WAITING):
                log.error("webhooks wait in the outbox: BROADCASTER_WEBHOOK_SECRET is not set")
                self._warned = True
            return 0
        rows = await self.pool.fetch(LEASE, BATCH, LEASE_SECONDS)
        if not rows:
            return 0
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            )
        results = await asyncio.gather(*(self._post(row, secret) for row in rows))
        done = [row["id"] for row, error in zip(rows, results, strict=True) if error is None]
        failed = [(row, error) for row, error in zip(rows, results, strict=True) if error]
        async with self.pool.acquire() as conn, conn.transaction():
            if done:
                await conn.execute(DELIVERED, done)
            if failed:
                base = self.settings.tip_retry_base_seconds
                cap = self.settings.tip_retry_max_seconds
                await conn.execute(
                    RETRY,
                    [row["id"] for row, _ in failed],
                    [retry_delay(row["attempts"] + 1, base, cap) for row, _ in failed],
                    [error for _, error in failed],
                )
        for row, error in zip(rows, results, strict=True):
            metrics.WEBHOOK_POSTS.labels(row["kind"], "failed" if error else "ok").inc()
        return len(rows)

    async def _post(self, row: Any, secret: str) -> str | None:
        """POST one row; None on a 2xx, else what went wrong (kept in the row)."""
        assert self._session is not None
        body = body_of(row)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(secret, body),
            EVENT_HEADER: event_of(row),
            "User-Agent": "broadcaster-webhooks",
        }
        try:
            async with self._session.post(
                row["url"], data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                error = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = type(exc).__name__
        log.warning(
            "webhook post failed; will try again",
            extra={
                "kind": row["kind"],
                "host": urlsplit(row["url"]).hostname,
                "error": error,
                "attempts": row["attempts"] + 1,
            },
        )
        return error


async def run(pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event) -> None:
    """Post webhooks until `stop` is set: at once while there are due rows, else every poll
    interval."""
    poster = Poster(pool, settings)
    try:
        while not stop.is_set():
            try:
                tried = await poster.post_due()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook posting paused: %s", type(exc).__name__)
                tried = 0
            if not tried:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.poll_interval)
    finally:
        await poster.close()
