"""Named zones: the shipped boundaries after migration, POST/GET /v1/zones, import-zones, and
how `broadcaster migrate` treats the shipped data against an operator's changes."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from tests.test_api import assert_problem, auth
from tests.test_api import client as client
from tests.test_api import key as key
from tests.test_importer import run_cli

from broadcaster.api.routes_zones import MAX_FEATURES
from broadcaster.auth import create_api_key
from broadcaster.database import connect
from broadcaster.ingest.zone_files import SHIPPED_FILES
from broadcaster.migrate import apply_migrations, pending_migrations

SQUARE = [[12.30, 55.92], [12.32, 55.92], [12.32, 55.93], [12.30, 55.93], [12.30, 55.92]]
BOWTIE = [[12.30, 55.92], [12.32, 55.93], [12.32, 55.92], [12.30, 55.93], [12.30, 55.92]]


def feature(name: str, kind: str = "custom", code: Any = None, ring: list | None = None) -> dict:
    properties: dict[str, Any] = {"name": name, "kind": kind}
    if code is not None:
        properties["code"] = code
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": {"type": "Polygon", "coordinates": [ring or SQUARE]},
    }


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def shipped(name: str) -> list[dict]:
    text = resources.files("broadcaster.data").joinpath(name).read_text(encoding="utf-8")
    features: list[dict] = json.loads(text)["features"]
    return features


def test_the_shipped_files_are_the_district_data() -> None:
    """13 municipalities, the district and 52 postal codes, as the data's README says."""
    municipalities = shipped(SHIPPED_FILES[0])
    postal = shipped(SHIPPED_FILES[1])
    kinds = [f["properties"]["kind"] for f in municipalities]
    assert kinds.count("municipality") == 13 and kinds.count("police_district") == 1
    assert len(postal) == 52 and {f["properties"]["kind"] for f in postal} == {"postal_code"}
    readme = resources.files("broadcaster.data").joinpath("README.md").read_text("utf-8")
    assert "Indeholder data fra Geodatastyrelsen (nu Klimadatastyrelsen), DAGI" in readme


async def test_migrate_loads_the_shipped_zones(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT kind, count(*) AS n FROM zones GROUP BY kind")
    assert {r["kind"]: r["n"] for r in rows} == {
        "municipality": 13,
        "police_district": 1,
        "postal_code": 52,
    }
    hillerod = await pool.fetchrow("SELECT * FROM zones WHERE name = 'Hillerød Kommune'")
    assert (hillerod["code"], hillerod["source"]) == ("219", "shipped")
    expected = next(f for f in shipped(SHIPPED_FILES[0]) if f["properties"]["code"] == 219)
    assert hillerod["geometry"] == expected["geometry"]
    # Every postal code has its core, and the core lies inside the postal code.
    cores = await pool.fetchval(
        "SELECT count(DISTINCT zone_id) FROM zone_parts WHERE kind = 'core'"
    )
    assert cores == 52


async def test_list_zones_by_kind_and_in_pages(client: httpx.AsyncClient, key: str) -> None:
    r = await client.get("/v1/zones", headers=auth(key), params={"kind": "postal_code"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["zones"]) == 52 and body["next_cursor"] is None
    assert {z["kind"] for z in body["zones"]} == {"postal_code"}
    assert {"code": "3400", "name": "3400 Hillerød"}.items() <= next(
        z for z in body["zones"] if z["code"] == "3400"
    ).items()
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 20} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/zones", headers=auth(key), params=params)).json()
        seen += [z["id"] for z in page["zones"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 66 and seen == sorted(set(seen))


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"kind": "county"}, "kind"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"cursor": "not-ours"}, "cursor"),
        ({"cursor": "ejEyYWI"}, "cursor"),  # base64 of "z12ab"
    ],
)
async def test_bad_list_parameters_get_422(
    client: httpx.AsyncClient, key: str, params: dict, detail: str
) -> None:
    assert_problem(await client.get("/v1/zones", headers=auth(key), params=params), 422, detail)


async def test_one_zone_is_a_geojson_feature(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    zone_id = await pool.fetchval("SELECT id FROM zones WHERE code = '3480'")
    r = await client.get(f"/v1/zones/{zone_id}", headers=auth(key))
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "Feature" and body["id"] == zone_id
    assert body["properties"]["name"] == "3480 Fredensborg"
    assert body["geometry"]["type"] == "MultiPolygon"
    assert_problem(await client.get("/v1/zones/999999", headers=auth(key)), 404)
    assert_problem(await client.get("/v1/zones/0", headers=auth(key)), 422)


async def test_post_creates_then_updates_by_code_or_name(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    r = await client.post("/v1/zones", headers=auth(key), json=feature("Hillerød centrum"))
    assert r.status_code == 201, r.text
    (created,) = r.json()["zones"]
    assert created["result"] == "created" and created["kind"] == "custom"
    again = await client.post("/v1/zones", headers=auth(key), json=feature("Hillerød centrum"))
    assert again.status_code == 200 and again.json()["zones"][0]["result"] == "unchanged"
    moved = [[x + 0.01, y] for x, y in SQUARE]
    # Matched by kind and name (no code), case and spacing aside: the geometry changes.
    r = await client.post(
        "/v1/zones", headers=auth(key), json=feature("hillerød  CENTRUM", ring=moved)
    )
    assert r.status_code == 200 and r.json()["zones"][0] == {
        **created,
        "name": "hillerød  CENTRUM",
        "result": "updated",
    }
    stored = await pool.fetchrow("SELECT geometry, source FROM zones WHERE id = $1", created["id"])
    assert stored["geometry"]["coordinates"] == [moved] and stored["source"] == "api"
    box = await pool.fetchval("SELECT bbox::text FROM zone_parts WHERE zone_id = $1", created["id"])
    assert box == "(12330000,55930000),(12310000,55920000)"
    # A postal code is matched by its code: a new name renames it.
    r = await client.post(
        "/v1/zones",
        headers=auth(key),
        json=feature("3400 Hillerød C", "postal_code", "3400", SQUARE),
    )
    assert r.status_code == 200 and r.json()["zones"][0]["result"] == "updated"
    assert await pool.fetchval("SELECT name FROM zones WHERE code = '3400'") == "3400 Hillerød C"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (feature("x", "postal_code"), 422, "properties: value error, a postal_code zone needs"),
        (feature("x", "county"), 422, "properties.kind"),
        (feature("   "), 422, "properties.name"),
        (feature("x", ring=BOWTIE), 422, "geometry: polygon 0 is not valid"),
        (collection(feature("a"), feature("b", ring=BOWTIE)), 422, "features[1].geometry"),
        (collection(feature("a"), feature("A ")), 422, "features[0] and features[1]"),
        (
            collection(feature("a", "municipality", 1), feature("b", "municipality", "1")),
            422,
            "both have the code '1'",
        ),
        (feature("Hillerød Kommune"), 409, "taken by the municipality zone"),
        (
            {**feature("x"), "geometry": {"type": "Circle", "center": [12, 55], "radius_m": 5}},
            422,
            "geometry.type",
        ),
        ({"type": "FeatureCollection", "features": []}, 422, "features"),
        (
            {
                **collection(feature("x")),
                "crs": {"type": "name", "properties": {"name": "EPSG:25832"}},
            },
            422,
            "wgs 84",
        ),
        ({"type": "Polygon", "coordinates": [SQUARE]}, 422, "type"),
    ],
)
async def test_bad_zones_get_problem_json(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, body: Any, status: int, detail: str
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM zones")
    assert_problem(await client.post("/v1/zones", headers=auth(key), json=body), status, detail)
    assert await pool.fetchval("SELECT count(*) FROM zones") == before


async def test_gdal_files_with_a_wgs84_crs_and_extra_properties_are_taken(
    client: httpx.AsyncClient, key: str
) -> None:
    body = collection(feature("Skole", code=17))
    body["features"][0]["properties"]["KOMNAVN"] = "Hillerød"
    body |= {
        "name": "skoler",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
    }
    r = await client.post("/v1/zones", headers=auth(key), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["zones"][0]["code"] == "17"


async def test_too_many_features_and_too_large_bodies(client: httpx.AsyncClient, key: str) -> None:
    many = collection(*(feature(f"z{i}") for i in range(MAX_FEATURES + 1)))
    assert_problem(await client.post("/v1/zones", headers=auth(key), json=many), 422, "at most")
    big = json.dumps(collection(feature("x"))) + " " * (4 * 1024 * 1024)
    r = await client.post(
        "/v1/zones", headers=auth(key) | {"content-type": "application/json"}, content=big
    )
    assert_problem(r, 413)


async def test_scopes(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        reader = await create_api_key(conn, "reader", ["alerts:read"])
        registrar = await create_api_key(conn, "registrar", ["subscribers:write"])
    assert (await client.get("/v1/zones", headers=auth(reader))).status_code == 200
    assert_problem(
        await client.post("/v1/zones", headers=auth(reader), json=feature("x")), 403, "alerts:write"
    )
    assert_problem(await client.get("/v1/zones", headers=auth(registrar)), 403, "alerts:read")
    assert_problem(await client.get("/v1/zones"), 401)


def write_json(tmp_path: Path, body: Any, name: str = "zones.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


async def test_import_zones_command(db_url: str, tmp_path: Path) -> None:
    good = write_json(
        tmp_path,
        collection(
            feature("Skoven", "custom"), feature("Søen", ring=[[x, y + 0.1] for x, y in SQUARE])
        ),
    )
    done = run_cli("import-zones", str(good), db_url=db_url)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "imported zones.geojson: 2 zone(s): 2 created, 0 updated, 0 unchanged"
    )
    again = run_cli("import-zones", str(good), db_url=db_url)
    assert "0 created, 0 updated, 2 unchanged" in again.stdout
    conn = await connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM zones WHERE source = 'import'") == 2
    finally:
        await conn.close()
    for body, message in [
        (
            collection(feature("a"), feature("b", ring=BOWTIE)),
            "zones.geojson: features[1].geometry: polygon 0 is not valid",
        ),
        ("{not json", "zones.geojson: not valid JSON"),
        (collection(feature("Gribskov Kommune")), "taken by the municipality zone"),
    ]:
        path = tmp_path / "zones.geojson"
        path.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
        bad = run_cli("import-zones", str(path), db_url=db_url)
        assert bad.returncode == 1
        assert message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    missing = run_cli("import-zones", str(tmp_path / "nowhere.geojson"), db_url=db_url)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


async def test_shipped_data_is_loaded_once_per_version_and_operators_changes_stay(
    db_url: str,
) -> None:
    conn = await connect(db_url)
    try:
        # An operator corrected Hillerød Kommune; Gribskov still holds the shipped geometry but
        # was damaged; a new version of the shipped files arrives (its hash is not recorded).
        square = {"type": "Polygon", "coordinates": [SQUARE]}
        await conn.execute(
            "UPDATE zones SET geometry = $1, source = 'api' WHERE name = 'Hillerød Kommune'",
            square,
        )
        await conn.execute("UPDATE zones SET geometry = $1 WHERE name = 'Gribskov Kommune'", square)
        assert await apply_migrations(conn) == []
        await conn.execute("DELETE FROM shipped_data")
        assert await pending_migrations(conn) == [f"zones from {n}" for n in SHIPPED_FILES]
        applied = await apply_migrations(conn)
        assert applied[0].startswith(
            f"zones from {SHIPPED_FILES[0]} (14 zones: 0 created, 1 updated, 12 unchanged, 1 kept)"
        )
        hillerod = await conn.fetchval("SELECT geometry FROM zones WHERE name = 'Hillerød Kommune'")
        gribskov = await conn.fetchval("SELECT geometry FROM zones WHERE name = 'Gribskov Kommune'")
        assert hillerod == square and gribskov["type"] == "MultiPolygon"
        assert await pending_migrations(conn) == []
    finally:
        await conn.close()
