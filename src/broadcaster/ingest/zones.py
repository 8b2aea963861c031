"""Named zones: police districts, municipalities, postal codes and custom areas.

A zone is a GeoJSON (Multi)Polygon with a kind, a name unique across kinds (compared
case-insensitively) and, where it has one, a code unique within its kind (a postal code always
has one). Zones are written as a set (POST /v1/zones, `broadcaster import-zones`, the shipped
data): a feature with a code is matched to an existing zone by kind and code, one without by
kind and name; the matched zone takes the feature's name, code and geometry. Alerts target
zones by name or postal code; subscribers register by postal code.

Each zone is stored with its rows (zone_parts): the rows an alert for it copies into alert_zones,
and, for postal codes, the pieces of the postal code's *core*: the area less a band of
CORE_MARGIN_M along its border. An alert whose area overlaps the core reaches the subscribers
registered by that postal code (see the README: where in the postal code they live is unknown,
and the band keeps an alert drawn along a border from reaching the postal codes beyond it
through slivers of generalised boundary data).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import asyncpg
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from broadcaster.ingest.geo import PolygonZone, Ring, ZoneRow, parse_area, ring_rows
from broadcaster.ingest.pieces import needs_cutting, subdivide

KINDS = ("police_district", "municipality", "postal_code", "custom")
# Kinds a subscriber may register by; their zones get a core.
REGISTRABLE_KINDS = frozenset({"postal_code"})
CORE_MARGIN_M = 100.0
# A core keeps at least this share of its zone's area; the band is narrowed until it does.
CORE_MIN_SHARE = 0.5
# Serialises writers of zones, so that two imports cannot race on the same names.
ZONES_LOCK_ID = 0x5A4F_4E45  # "ZONE"
_METRES_PER_DEGREE = math.pi * 6_371_008.8 / 180


class ZoneError(ValueError):
    """Zones that cannot be stored; the message names the feature and says why."""


class UnknownZones(ValueError):
    """Names or codes that name no zone."""

    def __init__(self, what: str, missing: list[str]) -> None:
        self.missing = missing
        listed = ", ".join(repr(m) for m in missing)
        super().__init__(f"unknown {what}: {listed}")


def name_key(name: str) -> str:
    """What makes two names the same: case-folded, NFC, white space runs as one blank."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


@dataclass(frozen=True)
class ZoneInput:
    """A validated feature: kind, name, code (text) and its geometry as stored."""

    kind: str
    name: str
    code: str | None
    geometry: dict[str, Any]


@dataclass(frozen=True)
class PreparedZone:
    zone: ZoneInput
    key: str
    rows: list[ZoneRow]


@dataclass(frozen=True)
class StoredZone:
    id: int
    kind: str
    name: str
    code: str | None
    result: str  # created, updated, unchanged, kept (a shipped zone an operator changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "code": self.code,
            "result": self.result,
        }


def _at(where: str | None, i: int) -> str:
    """A feature's place in a message: "features[3]", or "" for a lone Feature."""
    return "the feature" if where is None else f"{where}[{i}]"


def prepare(zones: list[ZoneInput], where: str | None = "features") -> list[PreparedZone]:
    """Geometry checked and cut into rows; raise ZoneError naming the feature at fault."""
    prepared = []
    for i, zone in enumerate(zones):
        try:
            area = parse_area(zone.geometry)
        except ValueError as exc:
            at = "geometry" if where is None else f"{where}[{i}].geometry"
            raise ZoneError(f"{at}: {exc}") from None
        assert isinstance(area, PolygonZone)
        rows = area.rows()
        if zone.kind in REGISTRABLE_KINDS:
            rows += core_rows(area.shape(), len(rows))
        prepared.append(PreparedZone(zone, name_key(zone.name), rows))
    _check_unique(prepared, where)
    return prepared


def _check_unique(prepared: list[PreparedZone], where: str | None) -> None:
    names: dict[str, int] = {}
    codes: dict[tuple[str, str], int] = {}
    for i, p in enumerate(prepared):
        if p.key in names:
            raise ZoneError(
                f"{_at(where, names[p.key])} and {_at(where, i)} both have the name {p.zone.name!r}"
            )
        names[p.key] = i
        if p.zone.code is not None:
            code = (p.zone.kind, p.zone.code)
            if code in codes:
                raise ZoneError(
                    f"{_at(where, codes[code])} and {_at(where, i)} both have the code "
                    f"{p.zone.code!r}"
                )
            codes[code] = i


def core(shape: BaseGeometry) -> BaseGeometry:
    """The zone less a band of CORE_MARGIN_M along its border (narrower where that would leave
    less than CORE_MIN_SHARE of the area; the zone itself where nothing is left)."""
    lat0 = math.radians(shape.centroid.y)
    scale = [_METRES_PER_DEGREE * math.cos(lat0), _METRES_PER_DEGREE]
    metres = shapely.transform(shape, lambda c: c * scale)
    margin = CORE_MARGIN_M
    while margin >= 1.0:
        shrunk = metres.buffer(-margin, quad_segs=2)
        if shrunk.area >= CORE_MIN_SHARE * metres.area:
            return shapely.transform(shrunk, lambda c: c / scale)
        margin /= 2
    return shape


def core_rows(shape: BaseGeometry, first_part: int) -> list[ZoneRow]:
    """The core's pieces as 'core' rows (ring and box; holes left out, which can only make an
    overlap test say yes where it would have said no, and only at pathological depths)."""
    rings: list[Ring] = []
    for polygon in _polygons(core(shape)):
        if needs_cutting(polygon):
            rings += [piece.outline() for piece in subdivide(polygon, min_depth=0)]
        else:
            rings.append(list(polygon.exterior.coords))
    return ring_rows("core", first_part, rings)


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    return [g for g in getattr(geometry, "geoms", ()) if isinstance(g, Polygon) and g.area > 0]


# ---------------------------------------------------------------- storing

FIND_EXISTING = """
SELECT id, kind, name, name_key, code, geometry, source FROM zones
WHERE name_key = ANY($1::text[])
   OR (kind, code) IN (SELECT * FROM unnest($2::text[], $3::text[]))
"""

INSERT_ZONES = """
INSERT INTO zones (kind, name, name_key, code, geometry, source)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[])
RETURNING id, name_key
"""

UPDATE_ZONES = """
UPDATE zones z
SET name = u.name, name_key = u.name_key, code = u.code, geometry = u.geometry,
    source = u.source, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[])
     AS u(id, name, name_key, code, geometry, source)
WHERE z.id = u.id
"""

INSERT_PARTS = """
INSERT INTO zone_parts (zone_id, part, kind, ring, boundary, bbox)
SELECT p.zone_id, p.part, p.kind, p.ring::polygon, p.boundary::path, p.bbox::box
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS p(zone_id, part, kind, ring, boundary, bbox)
"""


async def store(
    conn: asyncpg.Connection,
    prepared: list[PreparedZone],
    source: str,
    *,
    keep_changed: bool = False,
    where: str | None = "features",
) -> list[StoredZone]:
    """Create or update the zones in one transaction; raise ZoneError for a name or code that
    belongs to another zone. With keep_changed (the shipped data), zones an operator wrote are
    left as they are, and so are features whose name an operator's zone has."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ZONES_LOCK_ID)
        coded = [p for p in prepared if p.zone.code is not None]
        rows = await conn.fetch(
            FIND_EXISTING,
            [p.key for p in prepared],
            [p.zone.kind for p in coded],
            [p.zone.code for p in coded],
        )
        by_key = {r["name_key"]: r for r in rows}
        by_code = {(r["kind"], r["code"]): r for r in rows if r["code"] is not None}
        results: list[StoredZone | None] = []
        inserts: list[PreparedZone] = []
        updates: list[tuple[int, PreparedZone]] = []
        for i, p in enumerate(prepared):
            z = p.zone
            match = by_code.get((z.kind, z.code)) if z.code is not None else by_key.get(p.key)
            if match is not None and match["kind"] != z.kind:
                match = None  # a zone of another kind with the name: a clash, below
            holder = by_key.get(p.key)
            if match is None and holder is not None and holder["kind"] == z.kind:
                if holder["code"] is None:
                    match = holder  # the zone is given a code
            if holder is not None and (match is None or holder["id"] != match["id"]):
                if keep_changed and holder["source"] != "shipped":
                    results.append(_stored(holder, "kept"))
                    continue
                kind = holder["kind"].replace("_", " ")
                raise ZoneError(
                    f"{where}[{i}]: the name {z.name!r} is taken by the {kind} zone {holder['id']}"
                )
            if match is None:
                results.append(None)
                inserts.append(p)
            elif keep_changed and match["source"] != "shipped":
                results.append(_stored(match, "kept"))
            elif (match["name"], match["code"], match["geometry"]) == (z.name, z.code, z.geometry):
                results.append(_stored(match, "unchanged"))
            else:
                results.append(StoredZone(match["id"], z.kind, z.name, z.code, "updated"))
                updates.append((match["id"], p))
        try:
            ids = await _write(conn, inserts, updates, source)
        except asyncpg.UniqueViolationError:
            # Two zones swapping names in one request: each rename meets the other's old name.
            raise ZoneError("names or codes clash with each other's old ones") from None
        new = iter(inserts)
        return [
            r if r is not None else _new(ids[next(new).key], prepared[i].zone)
            for i, r in enumerate(results)
        ]


def _stored(row: Any, result: str) -> StoredZone:
    return StoredZone(row["id"], row["kind"], row["name"], row["code"], result)


def _new(zone_id: int, z: ZoneInput) -> StoredZone:
    return StoredZone(zone_id, z.kind, z.name, z.code, "created")


async def _write(
    conn: asyncpg.Connection,
    inserts: list[PreparedZone],
    updates: list[tuple[int, PreparedZone]],
    source: str,
) -> dict[str, int]:
    if updates:
        await conn.execute(
            UPDATE_ZONES,
            [zone_id for zone_id, _ in updates],
            [p.zone.name for _, p in updates],
            [p.key for _, p in updates],
            [p.zone.code for _, p in updates],
            [p.zone.geometry for _, p in updates],
            [source] * len(updates),
        )
        await conn.execute(
            "DELETE FROM zone_parts WHERE zone_id = ANY($1::bigint[])", [i for i, _ in updates]
        )
    ids: dict[str, int] = {}
    if inserts:
        created = await conn.fetch(
            INSERT_ZONES,
            [p.zone.kind for p in inserts],
            [p.zone.name for p in inserts],
            [p.key for p in inserts],
            [p.zone.code for p in inserts],
            [p.zone.geometry for p in inserts],
            [source] * len(inserts),
        )
        ids = {r["name_key"]: r["id"] for r in created}
    written = [(ids[p.key], p) for p in inserts] + updates
    parts = [(zone_id, r) for zone_id, p in written for r in p.rows]
    if parts:
        await conn.execute(
            INSERT_PARTS,
            [zone_id for zone_id, _ in parts],
            [r.part for _, r in parts],
            [r.kind for _, r in parts],
            [r.ring for _, r in parts],
            [r.boundary for _, r in parts],
            [r.bbox for _, r in parts],
        )
    return ids


# ---------------------------------------------------------------- finding

FIND_BY_NAME = "SELECT id, name_key FROM zones WHERE name_key = ANY($1::text[])"
FIND_POSTAL_CODES = """
SELECT id, code FROM zones WHERE kind = 'postal_code' AND code = ANY($1::text[])
"""


async def resolve_names(conn: asyncpg.Connection, names: list[str]) -> list[int]:
    """Zone ids for names (compared as name_key does), in order; raise UnknownZones."""
    keys = [name_key(n) for n in names]
    found = {r["name_key"]: r["id"] for r in await conn.fetch(FIND_BY_NAME, keys)}
    missing = [n for n, k in zip(names, keys, strict=True) if k not in found]
    if missing:
        raise UnknownZones("zone(s)", missing)
    return list(dict.fromkeys(found[k] for k in keys))


async def resolve_postal_codes(conn: asyncpg.Connection, codes: list[str]) -> dict[str, int]:
    """{code: zone id} for postal codes; raise UnknownZones for codes no zone has."""
    found = {r["code"]: r["id"] for r in await conn.fetch(FIND_POSTAL_CODES, codes)}
    missing = list(dict.fromkeys(c for c in codes if c not in found))
    if missing:
        raise UnknownZones("postal code(s)", missing)
    return found


LIST_ZONES = """
SELECT id, kind, name, code, source, created_at, updated_at FROM zones
WHERE id > $1 AND ($2::text IS NULL OR kind = $2)
ORDER BY id
LIMIT $3
"""

GET_ZONE = """
SELECT id, kind, name, code, source, geometry, created_at, updated_at FROM zones WHERE id = $1
"""


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "code": row["code"],
        "source": row["source"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


async def list_zones(
    conn: asyncpg.Connection, kind: str | None, cursor: str | None, limit: int
) -> dict[str, Any]:
    """A page of zones in id order (without geometry), with the cursor of the next page."""
    rows = await conn.fetch(LIST_ZONES, decode_cursor(cursor), kind, limit + 1)
    page = [_summary(r) for r in rows[:limit]]
    more = len(rows) > limit
    return {"zones": page, "next_cursor": encode_cursor(page[-1]["id"]) if more else None}


async def get_zone(conn: asyncpg.Connection, zone_id: int) -> dict[str, Any] | None:
    """The zone as a GeoJSON Feature."""
    row = await conn.fetchrow(GET_ZONE, zone_id)
    if row is None:
        return None
    properties = _summary(row)
    del properties["id"]
    return {
        "type": "Feature",
        "id": row["id"],
        "properties": properties,
        "geometry": row["geometry"],
    }


class BadCursor(ValueError):
    pass


_CURSOR = re.compile(r"z([1-9][0-9]{0,18})")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"z{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The last id of the previous page (0 for the first); BadCursor if it is not ours."""
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("not a cursor given by this API") from None
    match = _CURSOR.fullmatch(text)
    if match is None or int(match.group(1)) > 2**63 - 1:
        raise BadCursor("not a cursor given by this API")
    return int(match.group(1))
