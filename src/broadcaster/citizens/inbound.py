"""Inbound SMS: every message a citizen sends us is stored, and acted on in the same transaction.

`store_batch` takes the verified messages of one or more requests (several gateways at once:
the API's group commit) and commits them: one statement when they are all tips (the common case,
one round trip), else one transaction that

1. stores every message in `inbound_messages`, in one statement. A message whose gateway id was
   stored before (the gateway posted it again) is stored once and not acted on again. A text
   that is not a keyword (keywords.py) is a **tip**: it is linked, in the same statement, to the
   most recent alert (kind 'alert') whose delivery to that number was sent or delivered within
   the last `tip_window_hours`; otherwise it is kept unlinked. A linked tip whose alert has a
   `tip_webhook` gets a row in `webhook_outbox` (webhooks.py posts it);
2. acts on each keyword stored, one number after another (numbers in order, so that two
   batches cannot deadlock on the same subscribers):
   - STOP / AFMELD / STOPP / UNSUBSCRIBE: the subscriber is opted out at once
     (`status 'opted_out'`, `opted_out_at`, `opt_out_reason 'sms STOP'`; an earlier opt-out
     keeps its time and reason) and its queued deliveries of alerts are cancelled (rows a
     dispatcher holds are skipped, not waited for: their batch is already being submitted, and
     any later claim cancels the rest, as claims do for subscribers who are not active). A
     number we do not know becomes an opted-out subscriber without areas, so that a later
     import or sign-up cannot quietly subscribe it. The STOP is confirmed by SMS;
   - START: an opted-out (or pending) subscriber with areas is active again; one without areas,
     or a number we do not know, is told how to join (`start_nothing`);
   - HJÆLP / HELP: the help text;
   - TILMELD 3400 / JOIN 3400: the number becomes an active subscriber (whatever it was: the
     SMS comes from it) with the postal code added to its places, answered with `join`; an
     unknown postal code gets `join_unknown`, a TILMELD without one the help text.
   Answers are notices (notices.py) in the subscriber's language, else the keyword's (Danish
   for STOP and START), and at most `keyword_replies_per_number` an hour go to one number (a
   machine answering our answers must not make a loop); the action itself is always done.
   A number we do not know that asks for an answer (HELP, START, JOIN) gets a *pending*
   subscriber row with source 'sms' and no areas to carry the notice. Such rows are deleted
   with their notices after BROADCASTER_PENDING_DAYS (7) by the retention job, as unconfirmed
   sign-ups are (retention.py); opted-out rows made by STOP are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from broadcaster.citizens import keywords, places, throttle
from broadcaster.citizens.keywords import Keyword
from broadcaster.citizens.notices import send_notice
from broadcaster.citizens.places import HAS_PLACES
from broadcaster.citizens.texts import FALLBACK, text
from broadcaster.ingest.zones import UnknownZones, resolve_postal_codes
from broadcaster.settings import Settings
from gateway_adapters.base import InboundMessage

log = logging.getLogger(__name__)

OPT_OUT_REASON = "sms STOP"
REPLY_LIFETIME = timedelta(hours=24)  # an answer that could not go out in a day is moot

# The messages as rows ($1..$7), then the tip window ($8). `recent`: the alerts that may have a
# delivery sent within the window (not completed before it began), as one array, so that each
# tip probes deliveries' (alert_id, subscriber_id) key once per such alert. The lookups are
# scalar subqueries, evaluated per message through an index whatever the batch size and the
# statistics (as joins, a batch of 500 was planned as a hash join over every subscriber);
# tests/test_inbound_plans.py checks it.
STORE = """
WITH m AS MATERIALIZED (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                $7::jsonb[])
         WITH ORDINALITY AS m(gateway, message_id, phone, text, kind, sent_at, raw, n)
), recent AS MATERIALIZED (
    SELECT coalesce(array_agg(id), '{}') AS ids FROM alerts
    WHERE kind = 'alert' AND (completed_at IS NULL OR completed_at > now() - $8::interval)
), found AS MATERIALIZED (
    SELECT m.*, s.subscriber_id,
           CASE WHEN m.kind = 'tip' AND s.subscriber_id IS NOT NULL THEN (
               SELECT d.alert_id FROM deliveries d
               WHERE d.alert_id = ANY((SELECT ids FROM recent)::bigint[])
                 AND d.subscriber_id = s.subscriber_id AND d.status IN ('sent', 'delivered')
                 AND d.sent_at > now() - $8::interval
               ORDER BY d.sent_at DESC, d.alert_id DESC
               LIMIT 1)
           END AS alert_id
    FROM m
    CROSS JOIN LATERAL (
        SELECT (SELECT id FROM subscribers WHERE phone = m.phone) AS subscriber_id OFFSET 0
    ) s
), stored AS (
    INSERT INTO inbound_messages (gateway, gateway_message_id, phone, subscriber_id, text, kind,
                                  alert_id, sent_at, raw)
    SELECT gateway, message_id, phone, subscriber_id, text, kind, alert_id, sent_at, raw
    FROM found
    ORDER BY n
    ON CONFLICT (gateway, gateway_message_id) WHERE gateway_message_id IS NOT NULL DO NOTHING
    RETURNING id, phone, text, kind, alert_id
), outbox AS (
    INSERT INTO webhook_outbox (kind, inbound_message_id, url)
    SELECT 'tip', id, url FROM (
        SELECT stored.id, (SELECT tip_webhook FROM alerts WHERE id = stored.alert_id) AS url
        FROM stored WHERE stored.alert_id IS NOT NULL
        OFFSET 0
    ) hooked
    WHERE url IS NOT NULL
)
SELECT t.tips, k.id, k.phone, k.text, k.kind
FROM (SELECT count(*) AS tips FROM stored WHERE kind = 'tip') t
LEFT JOIN (SELECT id, phone, text, kind FROM stored WHERE kind <> 'tip') k ON true
"""

# The subscriber a keyword is about, locked: two keywords from one number apply in turn.
FIND = f"""
SELECT s.id, s.status, s.language, {HAS_PLACES} AS has_areas
FROM subscribers s WHERE s.phone = $1
FOR UPDATE
"""

# TILMELD/JOIN with a postal code: the SMS comes from the number, so it is its owner's wish; the
# subscriber is active (whatever it was) and the postal code is added to its places.
JOIN = """
INSERT INTO subscribers (phone, language, status, source, confirmed_at)
VALUES ($1, $2, 'active', 'sms', now())
ON CONFLICT (phone) DO UPDATE
SET status = 'active', opted_out_at = NULL, opt_out_reason = NULL,
    confirmed_at = coalesce(subscribers.confirmed_at, now()), updated_at = now()
RETURNING id
"""

OPT_OUT = """
INSERT INTO subscribers (phone, language, status, source, opted_out_at, opt_out_reason)
VALUES ($1, $2, 'opted_out', 'sms', now(), $3)
ON CONFLICT (phone) DO UPDATE
SET status = 'opted_out',
    opted_out_at = CASE WHEN subscribers.status = 'opted_out' THEN subscribers.opted_out_at
                        ELSE now() END,
    opt_out_reason = CASE WHEN subscribers.status = 'opted_out' THEN subscribers.opt_out_reason
                          ELSE $3 END,
    updated_at = now()
RETURNING id
"""

# Queued deliveries of the subscriber's open alerts, through deliveries' (alert_id,
# subscriber_id) key: one probe per alert being dispatched. Rows a dispatcher holds are skipped.
CANCEL_QUEUED = """
UPDATE deliveries SET status = 'cancelled', error = 'subscriber opted out by SMS',
                      final_at = now()
WHERE id = ANY(ARRAY(
    SELECT d.id FROM deliveries d
    WHERE d.alert_id = ANY(ARRAY(SELECT id FROM alerts
                                 WHERE status = 'dispatching' AND kind = 'alert'))
      AND d.subscriber_id = $1 AND d.status IN ('queued', 'sending')
    FOR UPDATE SKIP LOCKED))
"""

OPT_IN = """
UPDATE subscribers
SET status = 'active', opted_out_at = NULL, opt_out_reason = NULL,
    confirmed_at = coalesce(confirmed_at, now()), updated_at = now()
WHERE id = $1
"""

# A number we do not know, to carry an answer: pending, no areas, made by SMS.
STRANGER = """
INSERT INTO subscribers (phone, language, status, source) VALUES ($1, $2, 'pending', 'sms')
ON CONFLICT (phone) DO UPDATE SET updated_at = now()
RETURNING id
"""

LINK_SUBSCRIBER = "UPDATE inbound_messages SET subscriber_id = $2 WHERE id = $1"


@dataclass(frozen=True, slots=True)
class Stored:
    """What `store_batch` did: messages stored (repeats not counted), by kind."""

    stored: int
    kinds: dict[str, int]


def kind_of(message_text: str) -> str:
    keyword = keywords.parse(message_text)
    return keyword.kind if keyword is not None else "tip"


async def store_batch(
    conn: asyncpg.Connection,
    settings: Settings,
    batch: Sequence[tuple[str, Sequence[InboundMessage]]],
    *,
    statement_timeout: float | None = None,
) -> Stored:
    """Store (gateway, messages) pairs and act on their keywords, and commit (see the module
    docstring; inside a caller's transaction, as part of it)."""
    rows = [(gateway, m) for gateway, messages in batch for m in messages]
    if not rows:
        return Stored(0, {})
    kinds = [kind_of(m.text) for _, m in rows]
    args = (
        [gateway for gateway, _ in rows],
        [m.gateway_message_id for _, m in rows],
        [m.phone for _, m in rows],
        [m.text for _, m in rows],
        kinds,
        [m.sent_at for _, m in rows],
        [m.raw if type(m.raw) is dict else dict(m.raw) for _, m in rows],
        timedelta(hours=settings.tip_window_hours),
    )
    if all(kind == "tip" for kind in kinds):
        # One statement commits on its own: no transaction block, one round trip.
        (result,) = await conn.fetch(STORE, *args, timeout=statement_timeout)
        return Stored(result["tips"], {"tip": result["tips"]} if result["tips"] else {})
    async with conn.transaction():
        result_rows = await conn.fetch(STORE, *args, timeout=statement_timeout)
        commands = sorted(
            (r for r in result_rows if r["kind"] is not None), key=lambda r: (r["phone"], r["id"])
        )
        for row in commands:
            keyword = keywords.parse(row["text"])
            assert keyword is not None  # STORE's kind came from the same parse
            await act(conn, settings, row["id"], row["phone"], keyword)
    counts: dict[str, int] = {"tip": result_rows[0]["tips"]} if result_rows[0]["tips"] else {}
    for row in commands:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    return Stored(result_rows[0]["tips"] + len(commands), counts)


async def stop(conn: asyncpg.Connection, phone: str, language: str, why: str) -> int:
    """Opt the number out of everything (a number we do not know becomes an opted-out row) and
    cancel its queued deliveries of alerts; returns the subscriber's id. What STOP does by SMS,
    and the leave page once its code is confirmed (citizens/leaving.py)."""
    subscriber_id: int = await conn.fetchval(OPT_OUT, phone, language, why)
    await conn.execute(CANCEL_QUEUED, subscriber_id)
    return subscriber_id


async def act(
    conn: asyncpg.Connection, settings: Settings, message_id: int, phone: str, keyword: Keyword
) -> None:
    """Do what one keyword asks, and answer it (see the module docstring)."""
    found = await conn.fetchrow(FIND, phone)
    language = found["language"] if found is not None else keyword.language or FALLBACK
    values: dict[str, object] = {}
    subscriber_id: int | None
    if keyword.kind == "stop":
        subscriber_id = await stop(conn, phone, language, OPT_OUT_REASON)
        answer = "stop"
    elif keyword.kind == "start":
        if found is not None and found["has_areas"]:
            await conn.execute(OPT_IN, found["id"])
            answer = "start"
        else:
            answer = "start_nothing"
        subscriber_id = found["id"] if found is not None else None
    elif keyword.kind == "join" and keyword.postal_code is not None:
        values = {"postal_code": keyword.postal_code}
        try:
            await resolve_postal_codes(conn, [keyword.postal_code])
        except UnknownZones:
            answer = "join_unknown"
            subscriber_id = found["id"] if found is not None else None
        else:
            subscriber_id = await conn.fetchval(JOIN, phone, language)
            await places.add(conn, subscriber_id, [{"postal_code": keyword.postal_code}])
            answer = "join"
    elif keyword.kind == "join":  # without a postal code: how to do it
        answer = "help"
        subscriber_id = found["id"] if found is not None else None
    else:
        answer = "help"
        subscriber_id = found["id"] if found is not None else None
    if subscriber_id is None:
        subscriber_id = await conn.fetchval(STRANGER, phone, language)
    if found is None:
        await conn.execute(LINK_SUBSCRIBER, message_id, subscriber_id)
    log.info("sms keyword", extra={"keyword": keyword.kind, "answer": answer})
    try:
        await throttle.hit(conn, "keyword-reply", phone, settings.keyword_replies_per_number)
    except throttle.Throttled:
        log.info("sms keyword not answered: too many answers to the number this hour")
        return
    reply = text(answer, language, settings.organisation, **values)
    expires_at = datetime.now(UTC) + REPLY_LIFETIME
    await send_notice(conn, subscriber_id, reply, keyword.kind, expires_at)
