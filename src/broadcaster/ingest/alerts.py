"""Alerts: creation (idempotent per API key) and their status with delivery counts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from broadcaster.ingest.geo import Zone

PRIORITIES = {"emergency": 0, "high": 1, "normal": 2}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
DELIVERY_STATES = ("queued", "sending", "sent", "delivered", "failed", "expired", "cancelled")

# Channel the dispatchers LISTEN on; the payload says what woke them.
WAKEUP_CHANNEL = "broadcaster_wakeup"


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True)
class NewAlert:
    """An alert to create. `area` is what the caller asked for, as stored and hashed; its zone
    is `zone` (a polygon or circle), the named zones `targets` (ids), whose rows are copied from
    zone_parts, or both (a CAP alert's polygons and postal codes: their union)."""

    message: str
    area: dict[str, Any]
    zone: Zone | None
    priority: str
    expires_at: datetime | None
    reference: str | None
    targets: tuple[int, ...] = ()
    tip_webhook: str | None = None  # where its tips are posted (webhooks.py)
    status_webhook: str | None = None  # where its outcome is posted (dispatch/outcomes.py)
    # The text in other languages, by language: a subscriber with one of them gets it, everyone
    # else `message`.
    texts: Mapping[str, str] = field(default_factory=dict)
    # When the caller asked it to go, and when it may start (send_at or the end of the quiet
    # hours it falls in; ingest/schedule.py). None: at once.
    send_at: datetime | None = None
    not_before: datetime | None = None
    # The template the texts were rendered from: name, version and values (ingest/templates.py).
    template: Mapping[str, Any] | None = None
    # A CAP message's sender, identifier, status and msgType (ingest/cap.py), hashed with the
    # rest so that the same identifier with another status is not taken for a repeat.
    cap: Mapping[str, str] | None = None

    def request_hash(self) -> bytes:
        fields: dict[str, Any] = {
            "message": self.message,
            "area": self.area,
            "priority": self.priority,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "reference": self.reference,
        }
        if self.tip_webhook is not None:  # absent, the hash is what it was before tip_webhook
            fields["tip_webhook"] = self.tip_webhook
        if self.status_webhook is not None:  # likewise
            fields["status_webhook"] = self.status_webhook
        if self.template is not None:
            # What the caller sent: a repeat after the template got a new version is the same
            # request.
            del fields["message"]
            fields["template"] = {k: self.template[k] for k in ("name", "values")}
        elif self.texts:  # absent, the hash is what it was before texts
            fields["texts"] = dict(self.texts)
        if self.send_at is not None:  # likewise
            fields["send_at"] = self.send_at.isoformat()
        if self.cap:
            fields["cap"] = dict(self.cap)
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


# The alert, its zone rows and the dispatchers' wake-up in one statement (so one round trip and
# an implicit transaction): under load every round trip waits for CPU. With a repeated
# Idempotency-Key the INSERT yields no row, so neither do the zone rows nor the notification.
INSERT_ALERT = """
WITH alert AS (
    INSERT INTO alerts (message, area, priority, reference, expires_at, api_key_id,
                        idempotency_key, request_hash, tip_webhook, multilingual, send_at,
                        not_before, status_webhook)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $17, cardinality($18::text[]) > 0, $20, $21,
            $22)
    ON CONFLICT (api_key_id, idempotency_key) DO NOTHING
    RETURNING id
), texts AS (
    INSERT INTO alert_texts (alert_id, language, message)
    SELECT alert.id, t.language, t.message
    FROM alert, unnest($18::text[], $19::text[]) AS t(language, message)
), zones AS (
    INSERT INTO alert_zones (alert_id, part, kind, ring, boundary, center, radius_m, bbox)
    SELECT alert.id, z.part, z.kind, z.ring::polygon, z.boundary::path, z.center::point,
           z.radius_m, z.bbox::box
    FROM alert,
         unnest($9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::float8[],
                $15::text[]) AS z(part, kind, ring, boundary, center, radius_m, bbox)
), wakeup AS (
    SELECT pg_notify($16, 'alert') FROM alert
)
SELECT alert.id FROM alert, wakeup
"""

# The same for an alert for named zones: their rows are copied from zone_parts (each zone's
# parts renumbered after the others'), and the zones are recorded in alert_targets.
INSERT_NAMED_ALERT = """
WITH alert AS (
    INSERT INTO alerts (message, area, priority, reference, expires_at, api_key_id,
                        idempotency_key, request_hash, tip_webhook, multilingual, send_at,
                        not_before, status_webhook)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $11, cardinality($12::text[]) > 0, $14, $15,
            $16)
    ON CONFLICT (api_key_id, idempotency_key) DO NOTHING
    RETURNING id
), texts AS (
    INSERT INTO alert_texts (alert_id, language, message)
    SELECT alert.id, t.language, t.message
    FROM alert, unnest($12::text[], $13::text[]) AS t(language, message)
), targets AS (
    INSERT INTO alert_targets (alert_id, zone_id)
    SELECT alert.id, t.zone_id FROM alert, unnest($9::bigint[]) AS t(zone_id)
), zones AS (
    INSERT INTO alert_zones (alert_id, part, kind, ring, boundary, bbox)
    SELECT alert.id, dense_rank() OVER (ORDER BY p.zone_id, p.part), p.kind, p.ring,
           p.boundary, p.bbox
    FROM alert, zone_parts p
    WHERE p.zone_id = ANY($9::bigint[]) AND p.kind <> 'core'
), wakeup AS (
    SELECT pg_notify($10, 'alert') FROM alert
)
SELECT alert.id FROM alert, wakeup
"""

# Named zones added to an alert that has a zone of its own (a CAP alert's postal codes beside
# its polygons): their rows are numbered after the alert's own parts ($3 is the last of them).
ADD_TARGETS = """
WITH targets AS (
    INSERT INTO alert_targets (alert_id, zone_id)
    SELECT $1, t.zone_id FROM unnest($2::bigint[]) AS t(zone_id)
)
INSERT INTO alert_zones (alert_id, part, kind, ring, boundary, bbox)
SELECT $1, $3 + dense_rank() OVER (ORDER BY p.zone_id, p.part), p.kind, p.ring, p.boundary,
       p.bbox
FROM zone_parts p
WHERE p.zone_id = ANY($2::bigint[]) AND p.kind <> 'core'
"""

FIND_BY_IDEMPOTENCY_KEY = """
SELECT id, request_hash FROM alerts WHERE api_key_id = $1 AND idempotency_key = $2
"""

# A queued alert whose start lies ahead is shown as 'scheduled' (not a stored state: nothing has
# to change it when the time comes).
SHOWN_STATUS = (
    "CASE WHEN a.status = 'queued' AND a.not_before > now() THEN 'scheduled' ELSE a.status END"
)

# A kept CAP message as answers show it (ingest/cap_messages.py; `m` is cap_messages). Times in
# UTC, as the alert's own are, whatever the session's TimeZone.
CAP_MESSAGE_FIELDS = """
'id', m.id, 'identifier', m.identifier, 'sender', m.sender,
'sent', to_char(m.sent AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
'status', m.status, 'msg_type', m.msg_type, 'references', to_jsonb(m."references"),
'received_at', to_char(m.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
'sha256', encode(m.sha256, 'hex')
"""

ALERT_STATUS = """
SELECT a.id, SHOWN_STATUS AS status, a.priority, a.reference, a.send_at, a.not_before,
       a.expires_at, a.created_at, a.fanned_out_at,
       a.completed_at, a.cancelled_at, a.recipients, a.tip_webhook, a.status_webhook,
       a.outcome_queued_at,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
          FROM (SELECT status, count(*) AS n FROM deliveries
                 WHERE alert_id = a.id GROUP BY status) c) AS counts,
       (SELECT count(*) FROM inbound_messages m
         WHERE m.alert_id = a.id AND m.kind = 'tip') AS tips,
       (SELECT count(*) FROM inbound_messages m
         WHERE m.alert_id = a.id AND m.kind = 'tip' AND m.forwarded_at IS NOT NULL) AS forwarded,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', z.id, 'kind', z.kind,
                                                     'name', z.name, 'code', z.code)
                                  ORDER BY z.id), '[]'::jsonb)
          FROM alert_targets t JOIN zones z ON z.id = t.zone_id
         WHERE t.alert_id = a.id) AS zones,
       a.cap_sender, a.cap_identifier, a.cap_status, a.cap_msg_type,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(CAP_FIELDS, 'effect', l.effect)
                                  ORDER BY m.id), '[]'::jsonb)
          FROM cap_message_alerts l JOIN cap_messages m ON m.id = l.message_id
         WHERE l.alert_id = a.id AND a.cap_identifier IS NOT NULL) AS cap_messages
FROM alerts a WHERE a.id = $1 AND a.kind = 'alert'
""".replace("SHOWN_STATUS", SHOWN_STATUS).replace("CAP_FIELDS", CAP_MESSAGE_FIELDS)


async def create_alert(
    conn: asyncpg.Connection,
    alert: NewAlert,
    api_key_id: int | None,
    idempotency_key: str | None,
) -> tuple[int, bool]:
    """Insert the alert with its zone and wake the dispatchers, in one statement.

    Returns (alert id, created); created is False when the Idempotency-Key matched an earlier
    identical request, in which case nothing new is queued.
    """
    request_hash = alert.request_hash()
    common = (
        alert.message,
        alert.area,
        PRIORITIES[alert.priority],
        alert.reference,
        alert.expires_at,
        api_key_id,
        idempotency_key,
        request_hash,
    )
    if alert.zone is None:
        alert_id = await conn.fetchval(
            INSERT_NAMED_ALERT,
            *common,
            list(alert.targets),
            WAKEUP_CHANNEL,
            alert.tip_webhook,
            list(alert.texts),
            list(alert.texts.values()),
            alert.send_at,
            alert.not_before,
            alert.status_webhook,
        )
    else:
        rows = alert.zone.rows()
        alert_id = await conn.fetchval(
            INSERT_ALERT,
            *common,
            [r.part for r in rows],
            [r.kind for r in rows],
            [r.ring for r in rows],
            [r.boundary for r in rows],
            [r.center for r in rows],
            [r.radius_m for r in rows],
            [r.bbox for r in rows],
            WAKEUP_CHANNEL,
            alert.tip_webhook,
            list(alert.texts),
            list(alert.texts.values()),
            alert.send_at,
            alert.not_before,
            alert.status_webhook,
        )
        if alert_id is not None and alert.targets:
            await conn.execute(ADD_TARGETS, alert_id, list(alert.targets), rows[-1].part)
    if alert_id is not None:
        return alert_id, True
    existing = await conn.fetchrow(FIND_BY_IDEMPOTENCY_KEY, api_key_id, idempotency_key)
    if existing is None:  # the first request's transaction was rolled back meanwhile
        raise IdempotencyConflict("this Idempotency-Key is being used by a request in progress")
    if bytes(existing["request_hash"]) != request_hash:
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
    return existing["id"], False


CANCEL_ALERT = """
UPDATE alerts SET status = 'cancelled', cancelled_at = now(), completed_at = now()
WHERE id = $1 AND status IN ('queued', 'dispatching') AND kind = 'alert'
RETURNING id
"""

# Rows in flight are locked by the dispatcher submitting them and skipped here (cancelling
# does not wait for a gateway): that dispatcher writes them as sent, or, if they go back to the
# queue, the next claim sees the alert cancelled and cancels them.
CANCEL_DELIVERIES = """
UPDATE deliveries SET status = 'cancelled', error = 'alert cancelled', final_at = now()
WHERE id = ANY(ARRAY(SELECT id FROM deliveries
                     WHERE alert_id = $1 AND status IN ('queued', 'sending')
                     FOR UPDATE SKIP LOCKED))
"""


class NotCancellable(Exception):
    """The alert has already finished (completed or expired)."""


async def cancel_alert(conn: asyncpg.Connection, alert_id: int) -> bool:
    """Cancel an alert: nothing more is submitted for it. Returns False for an unknown id;
    cancelling a cancelled alert again is a no-op; a finished alert raises NotCancellable."""
    async with conn.transaction():
        if await conn.fetchval(CANCEL_ALERT, alert_id) is None:
            status = await conn.fetchval(
                "SELECT status FROM alerts WHERE id = $1 AND kind = 'alert'", alert_id
            )
            if status is None:
                return False
            if status != "cancelled":
                raise NotCancellable(f"alert {alert_id} is already {status}")
            return True
        await conn.execute(CANCEL_DELIVERIES, alert_id)
    return True


async def alert_status(conn: asyncpg.Connection | asyncpg.Pool, alert_id: int) -> dict | None:
    row = await conn.fetchrow(ALERT_STATUS, alert_id)
    if row is None:
        return None
    counts = {state: 0 for state in DELIVERY_STATES}
    counts.update(row["counts"])
    return {
        "id": row["id"],
        "status": row["status"],
        "priority": PRIORITY_NAMES[row["priority"]],
        "reference": row["reference"],
        "send_at": _iso(row["send_at"]),
        "not_before": _iso(row["not_before"]),
        "expires_at": _iso(row["expires_at"]),
        "created_at": _iso(row["created_at"]),
        "fanned_out_at": _iso(row["fanned_out_at"]),
        "completed_at": _iso(row["completed_at"]),
        "cancelled_at": _iso(row["cancelled_at"]),
        "recipients": row["recipients"],
        "deliveries": counts,
        "tips": {"received": row["tips"], "forwarded": row["forwarded"]},
        "tip_webhook": row["tip_webhook"],
        "status_webhook": row["status_webhook"],
        "outcome_queued_at": _iso(row["outcome_queued_at"]),
        "zones": row["zones"],
        "cap": None
        if row["cap_identifier"] is None
        else {
            "sender": row["cap_sender"],
            "identifier": row["cap_identifier"],
            # The message that created it; none for an alert stored before messages were kept.
            "sent": next(
                (m["sent"] for m in row["cap_messages"] if m["effect"] == "created"), None
            ),
            "status": row["cap_status"],
            "msg_type": row["cap_msg_type"],
            "messages": row["cap_messages"],
        },
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


LIST_ALERTS = f"""
SELECT a.id, {SHOWN_STATUS} AS status, a.priority, a.reference, a.send_at, a.not_before,
       a.expires_at, a.created_at, a.fanned_out_at, a.completed_at, a.cancelled_at, a.recipients
FROM alerts a
WHERE a.kind = 'alert' AND a.id < $1
  AND (cardinality($2::text[]) = 0 OR {SHOWN_STATUS} = ANY($2::text[]))
ORDER BY a.id DESC
LIMIT $3
"""


async def list_alerts(
    conn: asyncpg.Connection, before_id: int, statuses: list[str], limit: int
) -> list[dict[str, Any]]:
    """Alerts newest first, below `before_id`, in any of `statuses` (all when empty); without
    delivery counts (GET /v1/alerts/{id} has them: counting a large alert's deliveries is not
    for every row of a list)."""
    rows = await conn.fetch(LIST_ALERTS, before_id, statuses, limit)
    return [{**dict(r), "priority": PRIORITY_NAMES[r["priority"]]} for r in rows]
