"""CAP 1.2 through POST /v1/alerts (Content-Type: application/cap+xml) against a real PostgreSQL:
recipients of the real fan-out checked against shapely and haversine over seeded subscribers,
errors naming the element, idempotency by sender and identifier, scope and audit as for JSON
alerts, Cancel and Update, and statuses other than Actual never reaching the gateway simulator
through a real dispatcher."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import shapely
from shapely.geometry import Point, Polygon
from tests.test_api import assert_problem, auth
from tests.test_api import client as client
from tests.test_api import key as key
from tests.test_cap import BILLION_LAUGHS, EXTERNAL_DTD, SQUARE, XXE, area_xml, cap_xml, info_xml
from tests.test_failover import Running, gateway, start_sim
from tests.test_fanout import add_subscribers, recipients
from tests.test_postal_codes import (
    POSTAL,
    circle_deg,
    register_by_postal_code,
    registrants_expected,
)

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.ingest.geo import CIRCLE_VERTICES, haversine_m
from broadcaster.settings import load_settings

CAP = {"Content-Type": "application/cap+xml"}


async def post_cap(client: httpx.AsyncClient, key: str, body: bytes) -> httpx.Response:
    return await client.post("/v1/alerts", headers={**auth(key), **CAP}, content=body)


def polygon_text(ring: list[tuple[float, float]]) -> str:
    """A (lon, lat) ring as CAP writes it: lat,lon pairs."""
    return " ".join(f"{lat},{lon}" for lon, lat in ring)


# ---------------------------------------------------------------- recipients


async def test_recipients_match_an_independent_computation(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    rng = random.Random(14)
    minx, miny, maxx, maxy = 12.0, 55.75, 12.55, 56.1
    points = [(rng.uniform(minx, maxx), rng.uniform(miny, maxy)) for _ in range(3000)]
    hull = shapely.MultiPoint(
        [(12.30 + rng.uniform(-0.06, 0.06), 55.93 + rng.uniform(-0.04, 0.04)) for _ in range(9)]
    ).convex_hull
    ring = list(hull.exterior.coords)
    square = Polygon([(12.25, 55.90), (12.35, 55.90), (12.35, 55.95), (12.25, 55.95)])
    circle = (12.45, 56.02, 3.0)  # lon, lat, km
    async with pool.acquire() as conn:
        by_code = await register_by_postal_code(conn, sorted(POSTAL))
        ids = await add_subscribers(conn, [[p] for p in points])
    located = dict(zip(ids, points, strict=True))

    def in_circle(p: tuple[float, float], band: float = 0.0) -> bool | None:
        """Inside the circle; None within `band` metres of its edge (too close to call)."""
        d = haversine_m(*p, circle[0], circle[1]) - circle[2] * 1000
        return None if abs(d) <= band + 1 else d < 0

    # A circle within a union is its circumscribed 64-gon: up to this much beyond the circle.
    band = circle[2] * 1000 * (1 / math.cos(math.pi / CIRCLE_VERTICES) - 1)
    cases: list[tuple[str, list[str], Any, set[str]]] = [
        ("polygon", [area_xml([polygon_text(ring)])], hull, set()),
        ("circle", [area_xml(circles=[f"{circle[1]},{circle[0]} {circle[2]}"])], None, set()),
        (
            "geocode",
            [area_xml(postal_codes=["3400", "3480"])],
            POSTAL["3400"].union(POSTAL["3480"]),
            {"3400", "3480"},
        ),
        (
            "areas",
            [
                area_xml([SQUARE], circles=[f"{circle[1]},{circle[0]} {circle[2]}"]),
                area_xml(postal_codes=["3000"]),
            ],
            square.union(POSTAL["3000"]),
            {"3000"},
        ),
    ]
    for name, areas, geometry, named in cases:
        r = await post_cap(client, key, cap_xml([info_xml(areas)], identifier=f"T-{name}"))
        assert r.status_code == 202, r.text
        async with pool.acquire() as conn:
            result = await fan_out_next(conn)
            assert result is not None and result.alert_id == r.json()["id"]
            got = await recipients(conn, result.alert_id)
        circled = name in ("circle", "areas")
        inside, unsure = set(), set()
        for sid, p in located.items():
            verdicts = []
            if geometry is not None:
                near = geometry.boundary.distance(Point(p)) < 1e-6
                verdicts.append(None if near else geometry.covers(Point(p)))
            if circled:
                verdicts.append(in_circle(p, band if name == "areas" else 0.0))
            if True in verdicts:
                inside.add(sid)
            elif None in verdicts:
                unsure.add(sid)
        assert inside, name  # the case reaches someone
        assert (got & set(ids)) - unsure == inside, name
        union = geometry
        if circled:
            disc = circle_deg(circle[0], circle[1], circle[2] * 1000)
            union = disc if geometry is None else geometry.union(disc)
        must, must_not = registrants_expected(union, named)
        assert {by_code[c] for c in must} <= got, (name, must)
        assert not {by_code[c] for c in must_not} & got, name


# ---------------------------------------------------------------- the API's answers


async def test_created_like_a_json_alert_with_audit_and_idempotency(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    body = cap_xml([info_xml([area_xml([SQUARE])], urgency="Immediate", severity="Extreme")])
    r = await post_cap(client, key, body)
    assert r.status_code == 202, r.text
    alert = r.json()
    assert alert["status"] == "queued" and alert["priority"] == "emergency"
    assert alert["reference"] == "NSJP-2026-4711"
    assert {k: v for k, v in alert["cap"].items() if k not in ("sent", "messages")} == {
        "sender": "nsjp@politi.dk",
        "identifier": "NSJP-2026-4711",
        "status": "Actual",
        "msg_type": "Alert",
    }
    assert r.headers["Location"] == f"/v1/alerts/{alert['id']}"
    again = await post_cap(client, key, body)
    assert again.status_code == 202 and again.json()["id"] == alert["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await post_cap(client, key, body.replace(b"indbrud", b"brand"))
    assert_problem(other, 422, "identifier")
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 1
    audit = await pool.fetch(
        "SELECT actor, action, subject, details FROM audit_log WHERE action LIKE 'alert.%'"
    )
    assert [(a["actor"], a["action"], a["subject"]) for a in audit] == [
        ("tests", "alert.created", f"alert:{alert['id']}")
    ]
    got = await client.get(f"/v1/alerts/{alert['id']}", headers=auth(key))
    assert got.json()["cap"]["identifier"] == "NSJP-2026-4711"
    # The media type's parameters and case do not matter.
    headers = {**auth(key), "Content-Type": "Application/CAP+XML; charset=utf-8"}
    r = await client.post("/v1/alerts", headers=headers, content=body)
    assert r.status_code == 202 and r.json()["id"] == alert["id"], r.text


async def test_the_scope_is_checked_before_the_body_is_read(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        reader = await create_api_key(conn, "reader", ["alerts:read"])
    r = await client.post("/v1/alerts", headers=CAP, content=b"<not xml")
    assert_problem(r, 401, "api key")
    r = await post_cap(client, reader, b"<not xml")
    assert_problem(r, 403, "alerts:write")
    r = await post_cap(client, reader, cap_xml([info_xml([area_xml([SQUARE])])]))
    assert_problem(r, 403, "alerts:write")
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0


async def test_errors_are_problems_naming_the_element(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    wrong_ns = cap_xml(
        [info_xml([area_xml([SQUARE])])], namespace="urn:oasis:names:tc:emergency:cap:1.1"
    )
    long_text = "Politiet efterlyser en mand. " * 12  # over the client's 2 segments
    cases: list[tuple[bytes, int, str]] = [
        (b"<alert", 400, "not well-formed"),
        (b"", 400, "not well-formed"),
        ("<alert>æ</alert>".encode("latin-1"), 400, "not well-formed"),
        (XXE, 400, "DTDs"),
        (BILLION_LAUGHS, 400, "DTDs"),
        (EXTERNAL_DTD, 400, "DTDs"),
        (wrong_ns, 422, "alert: the root element"),
        (
            cap_xml([info_xml([area_xml(postal_codes=["9999"])])]),
            422,
            "info[0].area[0].geocode: unknown postal code(s): '9999'",
        ),
        (cap_xml([info_xml([area_xml([SQUARE])], description=long_text)]), 422, "info[0] ("),
        (
            cap_xml([info_xml([area_xml([SQUARE])], expires="2020-01-01T00:00:00+01:00")]),
            422,
            "info[0].expires: must be in the future",
        ),
        (
            cap_xml([info_xml([area_xml([SQUARE]), area_xml(["55.9,12.2 55.9,12.3 55.9,12.2"])])]),
            422,
            "info[0].area[1].polygon",
        ),
    ]
    for body, status, words in cases:
        r = await post_cap(client, key, body)
        assert_problem(r, status, words)
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed(
    client: httpx.AsyncClient, key: str
) -> None:
    body = cap_xml([info_xml([area_xml([SQUARE], desc="x" * (5 * 1024 * 1024))])])
    r = await post_cap(client, key, body)
    assert_problem(r, 413, "larger than")


# ---------------------------------------------------------------- Cancel and Update


async def test_cancel_cancels_the_referenced_alert_with_its_audit_entry(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])]))
    alert_id = first.json()["id"]
    reference = "nsjp@politi.dk,NSJP-2026-4711,2026-12-07T20:00:00+01:00"
    unknown = await post_cap(
        client,
        key,
        cap_xml([], identifier="C-0", msg_type="Cancel", references=reference.replace("47", "99")),
    )
    assert_problem(unknown, 422, "references[0]: no alert")
    drill = await post_cap(
        client,
        key,
        cap_xml([], identifier="C-1", msg_type="Cancel", status="Exercise", references=reference),
    )
    assert_problem(drill, 422, "cannot cancel a Actual alert")
    r = await post_cap(
        client, key, cap_xml([], identifier="C-2", msg_type="Cancel", references=reference)
    )
    assert r.status_code == 200, r.text
    [cancelled] = r.json()["cancelled"]
    assert cancelled["id"] == alert_id and cancelled["status"] == "cancelled"
    actions = await pool.fetch(
        "SELECT action, subject FROM audit_log WHERE action LIKE 'alert.%' ORDER BY id"
    )
    assert [(a["action"], a["subject"]) for a in actions] == [
        ("alert.created", f"alert:{alert_id}"),
        ("alert.cancelled", f"alert:{alert_id}"),
    ]


async def test_a_cancel_of_several_is_all_or_none(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    ids = []
    for identifier in ("A-1", "A-2", "A-3"):
        r = await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])], identifier))
        ids.append(r.json()["id"])
    await pool.execute("UPDATE alerts SET status = 'completed' WHERE id = $1", ids[2])
    refs = [f"nsjp@politi.dk,{i},2026-12-07T20:00:00+01:00" for i in ("A-1", "A-2", "A-3")]
    r = await post_cap(
        client, key, cap_xml([], identifier="C-1", msg_type="Cancel", references=" ".join(refs))
    )
    assert_problem(r, 409, "already completed")
    statuses = await pool.fetch("SELECT status FROM alerts ORDER BY id")
    assert [s["status"] for s in statuses] == ["queued", "queued", "completed"]
    r = await post_cap(
        client, key, cap_xml([], identifier="C-2", msg_type="Cancel", references=" ".join(refs[:2]))
    )
    assert r.status_code == 200, r.text
    assert [a["id"] for a in r.json()["cancelled"]] == ids[:2]
    cancelled = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'alert.cancelled'"
    )
    assert cancelled == 2


async def test_update_replaces_the_alert_it_references(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = (await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])]))).json()
    reference = "nsjp@politi.dk,NSJP-2026-4711,2026-12-07T20:00:00+01:00 x,unknown,2026-12-07"
    r = await post_cap(
        client,
        key,
        cap_xml(
            [info_xml([area_xml([SQUARE])], headline="Politiet: opdatering")],
            identifier="NSJP-2026-4711-2",
            msg_type="Update",
            references=reference,
        ),
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["cap"]["msg_type"] == "Update"
    status = await pool.fetchval("SELECT status FROM alerts WHERE id = $1", first["id"])
    assert status == "cancelled"


# ---------------------------------------------------------------- never sent unless Actual


async def test_exercises_are_stored_but_never_sent_and_languages_are_honoured(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, db_url: str
) -> None:
    languages = ["da", "en", "de", "en", "da"]
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.30, 55.93)] for _ in languages])
        for sid, language in zip(ids, languages, strict=True):
            await conn.execute("UPDATE subscribers SET language = $2 WHERE id = $1", sid, language)
    exercises = []
    for status in ("Exercise", "Test", "System", "Draft"):
        r = await post_cap(
            client,
            key,
            cap_xml(
                [info_xml([area_xml([SQUARE])], headline=f"{status}!", severity="Extreme")],
                identifier=f"E-{status}",
                status=status,
            ),
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "completed" and r.json()["cap"]["status"] == status
        exercises.append(r.json()["id"])
    r = await post_cap(
        client,
        key,
        cap_xml(
            [
                info_xml([area_xml([SQUARE])], language="en-GB", headline="Police: burglaries"),
                info_xml([area_xml([SQUARE])], headline="Politiet: indbrud"),
            ],
            identifier="A-1",
        ),
    )
    assert r.status_code == 202, r.text
    sim, port = await start_sim()
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[gateway("gw", port)]
    )
    running = Running(settings, pool, db_url)
    try:
        deadline = time.monotonic() + 15
        while len(sim.messages) < len(ids):
            assert time.monotonic() < deadline, sim.messages
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time for anything else to go out
    finally:
        await running.close()
        await sim.close()
    got = sorted(m["message"].split("\n")[0] for m in sim.messages)
    assert got == sorted(["Politiet: indbrud"] * 3 + ["Police: burglaries"] * 2), (
        got
    )  # the German subscriber gets the Danish text
    for alert_id in exercises:
        r = await client.get(f"/v1/alerts/{alert_id}", headers=auth(key))
        assert r.json()["status"] == "completed" and r.json()["recipients"] is None
        assert sum(r.json()["deliveries"].values()) == 0
    # The database itself refuses to queue an exercise.
    try:
        await pool.execute("UPDATE alerts SET status = 'queued' WHERE id = $1", exercises[0])
    except asyncpg.CheckViolationError:
        pass
    else:
        raise AssertionError("an exercise could be queued")
    drill = "nsjp@politi.dk,E-Exercise,2026-12-07T20:00:00+01:00"
    r = await post_cap(
        client,
        key,
        cap_xml([], identifier="E-C", status="Exercise", msg_type="Cancel", references=drill),
    )
    assert r.status_code == 200 and r.json()["cancelled"][0]["status"] == "cancelled", r.text


async def test_the_quiet_hours_hold_a_cap_alert_as_they_hold_a_json_one(
    db_url: str, pool: asyncpg.Pool, key: str
) -> None:
    # Quiet hours from an hour ago to two hours ahead: every CAP alert but an emergency waits.
    here = datetime.now(ZoneInfo("Europe/Copenhagen"))
    settings = load_settings(
        database_url=db_url,
        quiet_hours_start=(here - timedelta(hours=1)).strftime("%H:%M"),
        quiet_hours_end=(here + timedelta(hours=2)).strftime("%H:%M"),
    )
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            normal = cap_xml(
                [info_xml([area_xml([SQUARE])], urgency="Expected", severity="Moderate")],
                identifier="quiet-1",
            )
            r = await post_cap(http, key, normal)
            assert r.status_code == 202, r.text
            assert r.json()["priority"] != "emergency" and r.json()["status"] == "scheduled"
            assert r.json()["not_before"] is not None
            urgent = cap_xml(
                [info_xml([area_xml([SQUARE])], urgency="Immediate", severity="Extreme")],
                identifier="quiet-2",
            )
            r = await post_cap(http, key, urgent)
            assert r.status_code == 202, r.text
            assert r.json()["priority"] == "emergency" and r.json()["status"] == "queued"
            assert r.json()["not_before"] is None
    # The fan-out takes the emergency and leaves the other for the end of the quiet hours.
    async with pool.acquire() as conn:
        first = await fan_out_next(conn)
        assert first is not None and first.alert_id == r.json()["id"]
        assert await fan_out_next(conn) is None


# ---------------------------------------------------------------- messages kept

A_1 = "nsjp@politi.dk,A-1,2026-12-07T20:00:00+01:00"


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def kept(pool: asyncpg.Pool, identifier: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM cap_messages WHERE identifier = $1 ORDER BY id", identifier
    )


async def test_sent_is_stored_and_shown_and_the_document_kept_as_received(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    body = cap_xml([info_xml([area_xml([SQUARE])])], identifier="A-1").replace(
        b"2026-12-07T20:00:00+01:00", b"2026-12-07T21:30:05+01:00"
    )
    r = await post_cap(client, key, body)
    assert r.status_code == 202, r.text
    alert = r.json()
    sent = datetime.fromisoformat("2026-12-07T21:30:05+01:00")
    assert instant(alert["cap"]["sent"]) == sent
    got = (await client.get(f"/v1/alerts/{alert['id']}", headers=auth(key))).json()
    assert instant(got["cap"]["sent"]) == sent
    [message] = got["cap"]["messages"]
    assert message["effect"] == "created" and message["msg_type"] == "Alert"
    assert (message["identifier"], message["sender"], message["status"]) == (
        "A-1",
        "nsjp@politi.dk",
        "Actual",
    )
    assert instant(message["sent"]) == sent and message["references"] == []
    assert message["sha256"] == hashlib.sha256(body).hexdigest()
    [answered] = alert["cap"]["messages"]
    assert (answered["id"], answered["sha256"]) == (message["id"], message["sha256"])
    [row] = await kept(pool, "A-1")
    assert row["sent"] == sent and row["api_key_name"] == "tests" and row["request_id"]
    assert bytes(row["body"]) == body
    # The document comes back byte for byte, with its digest.
    raw = await client.get(f"/v1/cap/messages/{message['id']}", headers=auth(key))
    assert raw.status_code == 200 and raw.content == body
    assert raw.headers["content-type"] == "application/cap+xml"
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert raw.headers["Repr-Digest"] == f"sha-256=:{digest}:"
    missing = await client.get(f"/v1/cap/messages/{message['id'] + 1}", headers=auth(key))
    assert_problem(missing, 404, "no CAP message")
    # The same message again is the same alert, kept once.
    again = await post_cap(client, key, body)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert len(await kept(pool, "A-1")) == 1
    # A JSON alert has no CAP message.
    json_alert = await client.post(
        "/v1/alerts",
        headers=auth(key),
        json={"message": "Politiet: test", "area": {"postal_codes": ["3400"]}},
    )
    assert json_alert.status_code == 202 and json_alert.json()["cap"] is None, json_alert.text


async def test_a_cancel_is_kept_with_its_references_and_a_repeat_recorded_once(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])], "A-1"))
    alert_id = first.json()["id"]
    body = cap_xml([], identifier="C-1", msg_type="Cancel", references=A_1)
    r = await post_cap(client, key, body)
    assert r.status_code == 200, r.text
    assert "Idempotent-Replayed" not in r.headers
    answer = r.json()
    message = answer["message"]
    assert (message["identifier"], message["msg_type"], message["references"]) == (
        "C-1",
        "Cancel",
        [A_1],
    )
    assert message["sha256"] == hashlib.sha256(body).hexdigest()
    assert [a["id"] for a in answer["cancelled"]] == [alert_id]
    # Posted again: the same answer, nothing recorded or audited twice.
    again = await post_cap(client, key, body)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == answer
    [row] = await kept(pool, "C-1")
    assert row["id"] == message["id"] and row["msg_type"] == "Cancel"
    assert row["references"] == [A_1] and bytes(row["body"]) == body
    audited = await pool.fetch(
        "SELECT details FROM audit_log WHERE action = 'alert.cancelled' ORDER BY id"
    )
    assert [a["details"]["cap_message"] for a in audited] == [message["id"]]
    # The alert lists both messages, what each did to it.
    got = (await client.get(f"/v1/alerts/{alert_id}", headers=auth(key))).json()
    assert [(m["identifier"], m["effect"]) for m in got["cap"]["messages"]] == [
        ("A-1", "created"),
        ("C-1", "cancelled"),
    ]
    raw = await client.get(f"/v1/cap/messages/{message['id']}", headers=auth(key))
    assert raw.content == body
    # The identifier of another message is refused, whatever its type, and nothing is kept.
    other = cap_xml([], identifier="C-1", msg_type="Cancel", status="Exercise", references=A_1)
    assert_problem(await post_cap(client, key, other), 422, "identifier")
    alert = cap_xml([info_xml([area_xml([SQUARE])])], identifier="C-1")
    assert_problem(await post_cap(client, key, alert), 422, "identifier")
    assert len(await kept(pool, "C-1")) == 1
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 1


async def test_the_same_cancel_twice_at_once_is_recorded_once(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])], "A-1"))
    body = cap_xml([], identifier="C-1", msg_type="Cancel", references=A_1)
    answers = await asyncio.gather(*(post_cap(client, key, body) for _ in range(4)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len({a.json()["message"]["id"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" not in a.headers for a in answers) == 1
    assert all(a.json()["cancelled"][0]["id"] == first.json()["id"] for a in answers)
    assert len(await kept(pool, "C-1")) == 1
    cancelled = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'alert.cancelled'"
    )
    assert cancelled == 1


async def test_an_update_is_kept_and_linked_to_the_alert_it_replaces(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = (await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])], "A-1"))).json()
    references = f"{A_1} x,unknown,2026-12-07T19:00:00+01:00"
    body = cap_xml(
        [info_xml([area_xml([SQUARE])], headline="Politiet: opdatering")],
        identifier="U-1",
        msg_type="Update",
        references=references,
    )
    r = await post_cap(client, key, body)
    assert r.status_code == 202, r.text
    update = r.json()
    [created] = update["cap"]["messages"]
    assert (created["identifier"], created["msg_type"], created["effect"]) == (
        "U-1",
        "Update",
        "created",
    )
    assert created["references"] == references.split()
    got = (await client.get(f"/v1/alerts/{first['id']}", headers=auth(key))).json()
    assert got["status"] == "cancelled"
    assert [(m["identifier"], m["effect"]) for m in got["cap"]["messages"]] == [
        ("A-1", "created"),
        ("U-1", "updated"),
    ]
    assert got["cap"]["messages"][1]["id"] == created["id"]
    [row] = await kept(pool, "U-1")
    assert bytes(row["body"]) == body and row["references"] == references.split()


async def test_a_cancel_naming_no_alert_is_refused_and_not_kept(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    body = cap_xml([], identifier="C-1", msg_type="Cancel", references=A_1)
    assert_problem(await post_cap(client, key, body), 422, "references[0]: no alert")
    assert await kept(pool, "C-1") == []
    # Messages may arrive out of order: once the alert is there, the same Cancel is taken.
    first = await post_cap(client, key, cap_xml([info_xml([area_xml([SQUARE])])], "A-1"))
    r = await post_cap(client, key, body)
    assert r.status_code == 200, r.text
    assert [a["id"] for a in r.json()["cancelled"]] == [first.json()["id"]]
    assert len(await kept(pool, "C-1")) == 1


async def test_message_times_are_shown_in_utc_whatever_the_session_time_zone(
    db_url: str, key: str, pool: asyncpg.Pool
) -> None:
    name = await pool.fetchval("SELECT current_database()")
    await pool.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Tokyo'")
    app = create_app(load_settings(database_url=db_url), db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            r = await post_cap(http, key, cap_xml([info_xml([area_xml([SQUARE])])], "A-1"))
            assert r.status_code == 202, r.text
    cap = r.json()["cap"]
    assert cap["sent"] == "2026-12-07T19:00:00.000000+00:00"
    assert cap["messages"][0]["received_at"].endswith("+00:00")
