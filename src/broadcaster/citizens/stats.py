"""Statistics for the people who run the programme: who is signed up where, and why.

- Subscribers by zone: the active subscribers of each named zone (of one kind, or all): those
  with a point inside the zone (as the fan-out tests it, holes and boundaries included) and
  those registered by the zone itself (a postal code); one subscriber counts once per zone.
- Sign-ups: confirmed sign-ups per ISO week (Monday, Europe/Copenhagen) and the reasons given,
  over the weeks asked for. Nothing here names a subscriber.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from broadcaster.ingest.geo import BOUNDARY_TOLERANCE

SUBSCRIBERS_BY_ZONE = f"""
SELECT z.id, z.kind, z.name, z.code, count(DISTINCT x.subscriber_id) AS active
FROM zones z
LEFT JOIN LATERAL (
    SELECT l.subscriber_id
    FROM zone_parts p
    JOIN subscriber_locations l ON l.position <@ p.bbox
    WHERE p.zone_id = z.id AND p.kind IN ('outer', 'cell')
      AND (p.kind = 'cell' OR l.position <@ p.ring
           OR (l.position <-> p.boundary) <= {BOUNDARY_TOLERANCE})
      AND NOT EXISTS (
            SELECT 1 FROM zone_parts h
            WHERE h.zone_id = z.id AND h.part = p.part AND h.kind = 'hole'
              AND l.position <@ h.ring AND (l.position <-> h.boundary) > {BOUNDARY_TOLERANCE})
    UNION ALL
    SELECT r.subscriber_id FROM subscriber_zones r WHERE r.zone_id = z.id
) x ON NOT EXISTS (
    SELECT 1 FROM subscribers s WHERE s.id = x.subscriber_id AND s.status <> 'active')
WHERE ($1::text IS NULL OR z.kind = $1)
GROUP BY z.id
ORDER BY z.kind, z.code NULLS LAST, z.name
"""

SIGNUPS_PER_WEEK = """
SELECT (date_trunc('week', confirmed_at AT TIME ZONE 'Europe/Copenhagen'))::date AS week,
       count(*) AS confirmed
FROM signups
WHERE confirmed_at >= now() - make_interval(weeks => $1)
GROUP BY 1 ORDER BY 1
"""

SIGNUP_REASONS = """
SELECT coalesce(reason, 'not_given') AS reason, count(*) AS confirmed
FROM signups
WHERE confirmed_at >= now() - make_interval(weeks => $1)
GROUP BY 1 ORDER BY 2 DESC, 1
"""


async def subscribers_by_zone(conn: asyncpg.Connection, kind: str | None) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(SUBSCRIBERS_BY_ZONE, kind)]


async def signups(conn: asyncpg.Connection, weeks: int) -> dict[str, Any]:
    per_week = [dict(r) for r in await conn.fetch(SIGNUPS_PER_WEEK, weeks)]
    reasons = {r["reason"]: r["confirmed"] for r in await conn.fetch(SIGNUP_REASONS, weeks)}
    return {"weeks": weeks, "per_week": per_week, "reasons": reasons}
