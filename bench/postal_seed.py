"""Subscribers for the postal-code fan-out benchmark (bench/fanout.py, cases postal_codes and
zones), on the shipped postal codes of a migrated database.

Half of --total is reached by an alert for POSTAL_TARGET: 95 % of them with a point inside one
of those postal codes (uniform over their union, real boundaries), 5 % registered by one of the
codes. The other half is not: points elsewhere in the district, or registrations by postal codes
that do not touch the target (so no core of theirs overlaps it). Ids are shuffled, as in the
box case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape

from broadcaster.database import connect
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import SCALE
from broadcaster.ingest.zones import resolve_names, resolve_postal_codes

POSTAL_TARGET = ("3400", "3480", "3450", "3320", "3330", "3310", "3550")
REGISTERED_SHARE = 0.05


@dataclass(frozen=True)
class Seeded:
    reached: int
    registered: int
    registered_reached: int


def _features(name: str) -> list[dict[str, Any]]:
    text = resources.files("broadcaster.data").joinpath(name).read_text(encoding="utf-8")
    features: list[dict[str, Any]] = json.loads(text)["features"]
    return features


def _uniform(
    rng: np.random.Generator, region: Any, n: int, keep_inside: bool, within: Any
) -> np.ndarray:
    """n points uniform in `within` that are inside `region` (or outside it)."""
    minx, miny, maxx, maxy = within.bounds
    shapely.prepare(region)
    shapely.prepare(within)
    found: list[np.ndarray] = []
    have = 0
    while have < n:
        x = rng.uniform(minx, maxx, 2 * n)
        y = rng.uniform(miny, maxy, 2 * n)
        ok = shapely.contains_xy(within, x, y)
        ok &= shapely.contains_xy(region, x, y) == keep_inside
        found.append(np.column_stack([x[ok], y[ok]]))
        have += int(ok.sum())
    return np.concatenate(found)[:n]


async def seed_postal(url: str, total: int, seed: int = 2) -> Seeded:
    rng = np.random.default_rng(seed)
    postal = {
        f["properties"]["code"]: shape(f["geometry"])
        for f in _features("nordsjaelland_postal_codes.geojson")
    }
    district = next(
        shape(f["geometry"])
        for f in _features("nordsjaelland_municipalities.geojson")
        if f["properties"]["kind"] == "police_district"
    )
    target = shapely.union_all([postal[c] for c in POSTAL_TARGET])
    far = [c for c, g in postal.items() if not g.intersects(target.buffer(0.01))]
    reached = total // 2
    registered_in = int(reached * REGISTERED_SHARE)
    registered_out = int((total - reached) * REGISTERED_SHARE)
    inside = _uniform(rng, target, reached - registered_in, True, target)
    outside = _uniform(rng, target, total - reached - registered_out, False, district)
    points = np.concatenate([inside, outside])
    codes = list(rng.choice(POSTAL_TARGET, registered_in)) + list(rng.choice(far, registered_out))
    # Ids in shuffled order: subscriber ids[k] gets the k-th place.
    ids = rng.permutation(total) + 1
    conn = await connect(url)
    try:
        zone_ids = await resolve_postal_codes(conn, sorted(set(codes)))
        await conn.copy_records_to_table(
            "subscribers",
            columns=["id", "phone"],
            records=((i + 1, f"+453{i:07d}") for i in range(total)),
        )
        await conn.copy_records_to_table(
            "subscriber_locations",
            columns=["subscriber_id", "position"],
            records=(
                (int(ids[k]), (float(x) * SCALE, float(y) * SCALE))
                for k, (x, y) in enumerate(points)
            ),
        )
        first = len(points)
        await conn.copy_records_to_table(
            "subscriber_zones",
            columns=["subscriber_id", "zone_id"],
            records=((int(ids[first + k]), zone_ids[c]) for k, c in enumerate(codes)),
        )
        await conn.execute("SELECT setval('subscribers_id_seq', $1)", total)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return Seeded(reached, len(codes), registered_in)


async def named_alert(conn: Any, case: str) -> None:
    """An alert for the target postal codes, by code or by their zones' names."""
    if case == "postal_codes":
        area: dict[str, Any] = {"postal_codes": list(POSTAL_TARGET)}
        found = await resolve_postal_codes(conn, list(POSTAL_TARGET))
        targets = [found[c] for c in POSTAL_TARGET]
    else:
        names = await conn.fetch(
            "SELECT name FROM zones WHERE kind = 'postal_code' AND code = ANY($1::text[])",
            list(POSTAL_TARGET),
        )
        area = {"zones": [r["name"] for r in names]}
        targets = await resolve_names(conn, area["zones"])
    alert = NewAlert("bench", area, None, "normal", None, None, tuple(targets))
    await create_alert(conn, alert, None, None)
