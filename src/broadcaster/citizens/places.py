"""A subscriber's places: points (`subscriber_locations`) and postal codes (`subscriber_zones`).

One place per entry of a request's `locations`: `{"lat", "lon", "label"}` or `{"postal_code",
"label"}`. A postal code given twice is one place (the first label is kept). Everything that
stores, replaces, shows or removes a subscriber's places goes through here: the API's
subscribers, a confirmed sign-up, TILMELD by SMS, an access request, an erasure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from broadcaster.ingest.geo import SCALE
from broadcaster.ingest.zones import resolve_postal_codes

ADD_POINTS = """
INSERT INTO subscriber_locations (subscriber_id, label, position)
SELECT $1, l.label, point(l.lon * $5, l.lat * $5)
FROM unnest($2::text[], $3::float8[], $4::float8[]) AS l(label, lon, lat)
"""

ADD_POSTAL_CODES = """
INSERT INTO subscriber_zones (subscriber_id, zone_id, label)
SELECT $1, z.zone_id, z.label
FROM unnest($2::bigint[], $3::text[]) AS z(zone_id, label)
ON CONFLICT DO NOTHING
"""

DELETE_ALL = """
WITH points AS (DELETE FROM subscriber_locations WHERE subscriber_id = $1)
DELETE FROM subscriber_zones WHERE subscriber_id = $1
"""

SHOW = """
SELECT label, position[0] / $2 AS lon, position[1] / $2 AS lat, NULL::text AS postal_code, id, 0
FROM subscriber_locations WHERE subscriber_id = $1
UNION ALL
SELECT r.label, NULL, NULL, z.code, z.id, 1
FROM subscriber_zones r JOIN zones z ON z.id = r.zone_id WHERE r.subscriber_id = $1
ORDER BY 6, 5
"""

# SQL that is true when subscriber `s` has a place (for queries that need to know).
HAS_PLACES = """(EXISTS (SELECT 1 FROM subscriber_locations l WHERE l.subscriber_id = s.id)
        OR EXISTS (SELECT 1 FROM subscriber_zones z WHERE z.subscriber_id = s.id))"""


async def add(
    conn: asyncpg.Connection, subscriber_id: int, places: Sequence[Mapping[str, Any]]
) -> None:
    """Store places (in the caller's transaction); ingest.zones.UnknownZones for a postal code
    no zone has (nothing stored then)."""
    points = [p for p in places if "postal_code" not in p]
    postal = [p for p in places if "postal_code" in p]
    zone_ids = await resolve_postal_codes(conn, [p["postal_code"] for p in postal])
    if points:
        await conn.execute(
            ADD_POINTS,
            subscriber_id,
            [p.get("label") for p in points],
            [p["lon"] for p in points],
            [p["lat"] for p in points],
            SCALE,
        )
    if postal:
        await conn.execute(
            ADD_POSTAL_CODES,
            subscriber_id,
            [zone_ids[p["postal_code"]] for p in postal],
            [p.get("label") for p in postal],
        )


async def replace(
    conn: asyncpg.Connection, subscriber_id: int, places: Sequence[Mapping[str, Any]]
) -> None:
    """The subscriber's places become these (in the caller's transaction)."""
    await delete_all(conn, subscriber_id)
    await add(conn, subscriber_id, places)


async def delete_all(conn: asyncpg.Connection, subscriber_id: int) -> None:
    await conn.execute(DELETE_ALL, subscriber_id)


async def show(conn: asyncpg.Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """The subscriber's places as a request gives them: points first, then postal codes."""
    shown = []
    for r in await conn.fetch(SHOW, subscriber_id, SCALE):
        if r["postal_code"] is not None:
            shown.append({"postal_code": r["postal_code"], "label": r["label"]})
        else:
            shown.append({"lat": r["lat"], "lon": r["lon"], "label": r["label"]})
    return shown
