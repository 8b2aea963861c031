"""Synthetic subscribers spread over North Zealand, deterministic for a given seed.

Each municipality gets a share proportional to its population (2024, rounded), placed uniformly
inside its boundary; one in ten subscribers also registers a second point (work, parents), and a
few are pending or opted out, as in a real register.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import asyncpg
import numpy as np
import shapely
from shapely.geometry import shape

from broadcaster.ingest.geo import SCALE

# Population by municipality code, in thousands (Danmarks Statistik, 2024, rounded).
POPULATION = {
    157: 75,
    173: 57,
    190: 42,
    201: 26,
    210: 41,
    217: 63,
    219: 52,
    223: 25,
    230: 58,
    240: 44,
    250: 46,
    260: 31,
    270: 41,
}
HILLEROD = (12.3111, 55.9267)  # lon, lat of Hillerød station


@dataclass(frozen=True)
class Municipality:
    code: int
    name: str
    geometry: Any


@cache
def municipalities() -> list[Municipality]:
    text = (
        resources.files("broadcaster.data")
        .joinpath("nordsjaelland_municipalities.geojson")
        .read_text(encoding="utf-8")
    )
    features = json.loads(text)["features"]
    return [
        Municipality(f["properties"]["code"], f["properties"]["name"], shape(f["geometry"]))
        for f in features
        if f["properties"]["kind"] == "municipality"
    ]


def municipality_geojson(code: int) -> dict[str, Any]:
    text = (
        resources.files("broadcaster.data")
        .joinpath("nordsjaelland_municipalities.geojson")
        .read_text(encoding="utf-8")
    )
    for f in json.loads(text)["features"]:
        if f["properties"]["code"] == code:
            return dict(f["geometry"])
    raise KeyError(code)


def random_points(geometry: Any, n: int, rng: random.Random) -> np.ndarray:
    """n points uniformly inside geometry (rejection sampling in its bounding box)."""
    minx, miny, maxx, maxy = geometry.bounds
    shapely.prepare(geometry)
    nprng = np.random.default_rng(rng.randrange(2**32))
    found: list[np.ndarray] = []
    total = 0
    while total < n:
        xs = nprng.uniform(minx, maxx, n * 3)
        ys = nprng.uniform(miny, maxy, n * 3)
        inside = shapely.contains_xy(geometry, xs, ys)
        pts = np.column_stack([xs[inside], ys[inside]])
        found.append(pts)
        total += len(pts)
    return np.round(np.concatenate(found)[:n], 6)


def synthetic_subscribers(n: int, seed: int = 2010) -> tuple[list[tuple], list[tuple]]:
    """Rows for subscribers (id, phone, language, status) and subscriber_locations
    (subscriber_id, label, lon, lat)."""
    rng = random.Random(seed)
    areas = municipalities()
    weights = [POPULATION[m.code] for m in areas]
    total = sum(weights)
    counts = [n * w // total for w in weights]
    counts[0] += n - sum(counts)
    homes = np.concatenate(
        [random_points(m.geometry, c, rng) for m, c in zip(areas, counts, strict=True)]
    )
    order = list(range(n))
    rng.shuffle(order)
    district = shapely.union_all([m.geometry for m in areas])
    extra = random_points(district, n // 10 + 1, rng)
    subscribers, locations = [], []
    for i in range(n):
        sid = i + 1
        roll = rng.random()
        status = "opted_out" if roll < 0.02 else "pending" if roll < 0.03 else "active"
        language = "en" if rng.random() < 0.05 else "da"
        subscribers.append((sid, f"+452{i:07d}", language, status))
        lon, lat = homes[order[i]]
        locations.append((sid, "home", float(lon), float(lat)))
        if i % 10 == 0:
            lon, lat = extra[i // 10]
            locations.append((sid, "work", float(lon), float(lat)))
    return subscribers, locations


async def insert_subscribers(
    conn: asyncpg.Connection, subscribers: list[tuple], locations: list[tuple]
) -> None:
    """Bulk-load with COPY (into an empty register) and advance the id sequence."""
    async with conn.transaction():
        await conn.copy_records_to_table(
            "subscribers", records=subscribers, columns=["id", "phone", "language", "status"]
        )
        await conn.execute(
            "CREATE TEMP TABLE seed_loc (sid bigint, label text, lon float8, "
            "lat float8) ON COMMIT DROP"
        )
        await conn.copy_records_to_table("seed_loc", records=locations)
        await conn.execute(
            "INSERT INTO subscriber_locations (subscriber_id, label, position) "
            "SELECT sid, label, point(lon * $1, lat * $1) FROM seed_loc",
            SCALE,
        )
        await conn.execute(
            "SELECT setval('subscribers_id_seq', (SELECT coalesce(max(id), 1) FROM subscribers))"
        )
    await conn.execute("ANALYZE subscribers; ANALYZE subscriber_locations")
