"""Fan-out: turn a queued alert into one delivery per active subscriber inside its zone.

One set-based INSERT ... SELECT per alert, driven by the GiST index on subscriber locations,
with the subscribers registered by postal code (REGISTERED) added under the same DISTINCT.
A subscriber with several locations inside the zone gets one delivery (DISTINCT); pending and
opted-out subscribers get none (an anti-join on the few of them, see INACTIVE). There is no
ON CONFLICT clause: the alert is locked and still 'queued' in the same transaction, so it has
no deliveries yet, and the speculative insertion ON CONFLICT needs per row was a third of the
fan-out time. UNIQUE (alert_id, subscriber_id) still guards against a duplicate by failing
the transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from broadcaster.ingest.alerts import WAKEUP_CHANNEL
from broadcaster.ingest.geo import BOUNDARY_TOLERANCE, EARTH_RADIUS_M, SCALE

log = logging.getLogger(__name__)

ANALYZE_AFTER_ROWS = 10_000

# Settings for the rest of the fan-out's transaction (set_config(..., true) is SET LOCAL):
# - work_mem: the DISTINCT over a large zone sorts in memory instead of spilling to disk;
# - enable_hashagg off: the planner, which cannot know how many rows a zone holds, otherwise
#   puts a hash aggregate under the sort the ORDER BY needs: both hash and sort 500,000 rows
#   where sorting them and dropping neighbours that repeat is enough: 14 % less of the
#   database's CPU time per fan-out (docs/benchmarks.md, "The fan-out's DISTINCT").
FANOUT_SETTINGS = {"work_mem": "64MB", "enable_hashagg": "off"}

# Folded into this statement to save a round trip on the way of every emergency.
# $1 is the service's clock (Settings.now): an alert starts once its not_before has passed
# (scheduled, or waiting for the end of the quiet hours), and one whose expiry comes first is
# claimed at its expiry and expired without a message.
CLAIM_QUEUED_ALERT = f"""
SELECT id, priority, expires_at, area->>'type' AS area_type, expires_at <= $1 AS expired,
       EXISTS (SELECT 1 FROM alert_zones h WHERE h.alert_id = alerts.id AND h.kind = 'hole')
         AS holes,
       {", ".join(f"set_config('{k}', '{v}', true)" for k, v in FANOUT_SETTINGS.items())}
FROM alerts
WHERE status = 'queued' AND (not_before IS NULL OR not_before <= $1 OR expires_at <= $1)
ORDER BY priority, id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

# Subscribers who are not active (pending, opted out) get no delivery. They are few, so this is
# a probe of the small partial index subscribers_not_active (migration 0004) rather than a
# primary-key lookup and heap visit per recipient to read the status.
INACTIVE = """
SELECT 1 FROM subscribers s WHERE s.id = l.subscriber_id AND s.status <> 'active'
""".strip()

# Subscribers registered by a postal code (subscriber_zones) whose zone the alert names, or
# whose zone's core (the postal code less a band along its border, zone_parts 'core') the
# alert's area overlaps. Where in the postal code such a subscriber lives is unknown, so any
# alert that reaches well into it is for them (README, "Postal codes"). Every alert row but a
# hole has a ring (a cell's box, the polygon around a circle), and `&&` on polygons is an exact
# overlap test. They join the located subscribers in the statements below, under one DISTINCT:
# a separate INSERT had to leave out those already reached, by ON CONFLICT (a speculative
# insertion per row) or by an anti-join that the planner, not knowing the rows the transaction
# had just written, ran as a comparison of every registrant with every delivery.
REGISTERED = """
SELECT r.subscriber_id
FROM subscriber_zones r
WHERE r.zone_id IN (
        SELECT t.zone_id FROM alert_targets t WHERE t.alert_id = $1
        UNION
        SELECT c.zone_id
        FROM alert_zones a
        JOIN zone_parts c ON c.kind = 'core' AND c.bbox && a.bbox
        WHERE a.alert_id = $1 AND a.kind IN ('outer', 'cell', 'circle') AND c.ring && a.ring)
  AND NOT EXISTS (
        SELECT 1 FROM subscribers s WHERE s.id = r.subscriber_id AND s.status <> 'active')
""".strip()

# Rows go in in subscriber order (ORDER BY), so that the unique index on (alert_id,
# subscriber_id) grows at its right edge. Without it the planner may pick a hash aggregate for
# the DISTINCT, whose random order made the index's inserts touch ten times as many pages:
# 500,000 deliveries took twice as long to write.
#
# A location is inside an outer ring or on it, and not strictly inside one of that ring's holes
# (a point on a hole's boundary is on the polygon's boundary, hence inside). The bounding box is
# the GiST index condition; "on the ring" is a distance to the ring's path within the tolerance.
# A cell (a box wholly inside a large polygon, see ingest/pieces.py) is its bounding box, so the
# index condition is the whole test. Positions are in micro-degrees (see geo.SCALE).
#
# Most alerts have no holes (postal codes and municipalities have none); their fan-out leaves
# the holes' test out (RECIPIENTS_SOLID), which is true of every location when there are none
# but still cost a probe per location: 4 % of a postal-code fan-out's time.
NOT_IN_A_HOLE = f"""
      AND NOT EXISTS (
            SELECT 1 FROM alert_zones h
            WHERE h.alert_id = $1 AND h.part = z.part AND h.kind = 'hole'
              AND l.position <@ h.ring AND (l.position <-> h.boundary) > {BOUNDARY_TOLERANCE})"""
RECIPIENTS_SOLID = f"""
    SELECT l.subscriber_id
    FROM alert_zones z
    JOIN subscriber_locations l ON l.position <@ z.bbox
    WHERE z.alert_id = $1 AND z.kind IN ('outer', 'cell')
      AND NOT EXISTS ({INACTIVE})
      AND (z.kind = 'cell' OR l.position <@ z.ring
           OR (l.position <-> z.boundary) <= {BOUNDARY_TOLERANCE}){{holes}}
    UNION ALL
    {REGISTERED}
"""
RECIPIENTS_POLYGON = RECIPIENTS_SOLID.format(holes=NOT_IN_A_HOLE)
RECIPIENTS_SOLID = RECIPIENTS_SOLID.format(holes="")

# The box is an index pre-filter that contains the circle; the haversine test is exact.
RECIPIENTS_CIRCLE = f"""
    SELECT l.subscriber_id
    FROM alert_zones z
    JOIN subscriber_locations l ON l.position <@ z.bbox
    WHERE z.alert_id = $1 AND z.kind = 'circle'
      AND NOT EXISTS ({INACTIVE})
      AND 2 * {EARTH_RADIUS_M} * asin(least(1.0, sqrt(
            sin(radians((l.position[1] - z.center[1]) / {SCALE}) / 2) ^ 2
            + cos(radians(z.center[1] / {SCALE})) * cos(radians(l.position[1] / {SCALE}))
              * sin(radians((l.position[0] - z.center[0]) / {SCALE}) / 2) ^ 2))) <= z.radius_m
    UNION ALL
    {REGISTERED}
"""


def recipients(area_type: str) -> str:
    """The statement part that selects the alert's ($1) recipients, a subscriber once per
    location inside (and once more per postal code): shared by the fan-out and the preview."""
    return RECIPIENTS_CIRCLE if area_type == "Circle" else RECIPIENTS_POLYGON


def fanout_statement(area_type: str, holes: bool) -> str:
    if area_type == "Circle":
        return FANOUT_CIRCLE
    return FANOUT_POLYGON if holes else FANOUT_SOLID


FANOUT = """
INSERT INTO deliveries (alert_id, subscriber_id, priority)
SELECT DISTINCT $1::bigint, x.subscriber_id, $2::smallint
FROM ({recipients}) x
ORDER BY x.subscriber_id
"""
FANOUT_POLYGON = FANOUT.format(recipients=RECIPIENTS_POLYGON)
FANOUT_SOLID = FANOUT.format(recipients=RECIPIENTS_SOLID)
FANOUT_CIRCLE = FANOUT.format(recipients=RECIPIENTS_CIRCLE)

# Marks the alert and, if it has deliveries, wakes the dispatchers (one round trip).
MARK_FANNED_OUT = """
WITH marked AS (
    UPDATE alerts
    SET status = CASE WHEN $2::int = 0 THEN 'completed' ELSE 'dispatching' END,
        recipients = $2, fanned_out_at = now(),
        completed_at = CASE WHEN $2::int = 0 THEN now() END
    WHERE id = $1
    RETURNING id
)
SELECT pg_notify($3, 'deliveries') FROM marked WHERE $2::int > 0
"""

MARK_EXPIRED = """
UPDATE alerts SET status = 'expired', recipients = 0, completed_at = now() WHERE id = $1
"""


@dataclass(frozen=True)
class FanoutResult:
    alert_id: int
    recipients: int
    expired: bool = False


NEXT_START = """
SELECT min(not_before) FROM alerts WHERE status = 'queued' AND not_before > $1
"""


async def fan_out_next(
    conn: asyncpg.Connection, now: datetime | None = None
) -> FanoutResult | None:
    """Fan out the most urgent queued alert due at `now` (the service's clock; the system's by
    default), if any; the whole step is one transaction, so a crash leaves the alert queued for
    another dispatcher."""
    async with conn.transaction():
        alert = await conn.fetchrow(CLAIM_QUEUED_ALERT, now or datetime.now(UTC))
        if alert is None:
            return None
        if alert["expired"]:
            await conn.execute(MARK_EXPIRED, alert["id"])
            log.info("alert expired before fan-out", extra={"alert_id": alert["id"]})
            return FanoutResult(alert["id"], 0, expired=True)
        query = fanout_statement(alert["area_type"], alert["holes"])
        status = await conn.execute(query, alert["id"], alert["priority"])
        recipients = int(status.split()[-1])
        if recipients >= ANALYZE_AFTER_ROWS:
            # Statistics that include the new rows, before anyone claims them: with the old ones
            # (no rows open) the planner sorted every open delivery on each claim instead of
            # walking the due index, and a 500k broadcast slowed down to a crawl. Inside the
            # transaction ANALYZE counts our own uncommitted rows as live.
            await conn.execute("ANALYZE deliveries")
        await conn.execute(MARK_FANNED_OUT, alert["id"], recipients, WAKEUP_CHANNEL)
    log.info("alert fanned out", extra={"alert_id": alert["id"], "recipients": recipients})
    return FanoutResult(alert["id"], recipients)


async def next_start(conn: asyncpg.Connection, now: datetime) -> datetime | None:
    """When the next scheduled alert may start, if one is waiting."""
    return await conn.fetchval(NEXT_START, now)
