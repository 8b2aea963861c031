"""Message templates: stored, versioned, listed and read through the API; an alert naming one is
rendered in each of its languages (each subscriber gets their language's text, Danish when the
template lacks theirs), end to end through `broadcaster serve` and the GatewayAPI simulator; bad
templates and bad values are 422 naming what is wrong."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
from tests.stack import Stack
from tests.test_api import HILLEROD_SQUARE, assert_problem, auth
from tests.test_api import client as client
from tests.test_api import key as key

from broadcaster.auth import create_api_key
from broadcaster.ingest import templates

CIRCLE = {"type": "Circle", "center": [12.30, 55.93], "radius_m": 1000}
BURGLARY = {
    "name": "burglary_warning",
    "texts": {
        "da": "Politiet: indbrud i {area} i nat. Se noget? Ring 114.",
        "en": "Police: burglaries in {area} tonight. Seen anything? Call 114.",
    },
    "value_lengths": {"area": 30},
}


async def store(client: httpx.AsyncClient, key: str, body: dict) -> httpx.Response:
    return await client.post("/v1/templates", headers=auth(key), json=body)


# ---------------------------------------------------------------- parsing and rendering


def test_placeholders_literal_braces_and_stray_ones() -> None:
    text = templates.parse("Indbrud i {area} {{kl. {time}}}", "texts.da")
    assert text.names == ("area", "time")
    assert text.render({"area": "Hillerød", "time": "9.40"}) == "Indbrud i Hillerød {kl. 9.40}"
    for bad, position in [("a {area", 3), ("a } b", 3), ("{1x}", 1), ("{ area }", 1)]:
        with pytest.raises(templates.TemplateError, match=f"position {position}"):
            templates.parse(bad, "texts.da")


def test_a_value_is_put_in_as_written_not_read_as_a_template() -> None:
    template = templates.build("t", {"da": "Se {a}"}, {}, 6)
    assert template.render({"a": "{b} og {{c}}"}) == {"da": "Se {b} og {{c}}"}


# ---------------------------------------------------------------- the API


async def test_store_read_list_and_version(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    r = await store(client, key, BURGLARY)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/templates/burglary_warning"
    first = r.json()
    assert first["version"] == 1 and first["placeholders"] == ["area"]
    assert first["texts"] == BURGLARY["texts"] and first["value_lengths"] == {"area": 30}
    assert first["created_by"] == "tests"

    changed = {**BURGLARY, "texts": {"da": "Indbrud i {area}. Ring 114."}, "value_lengths": {}}
    r = await store(client, key, changed)
    assert r.status_code == 201 and r.json()["version"] == 2
    assert r.json()["value_lengths"] == {"area": templates.DEFAULT_VALUE_LENGTH}
    r = await store(client, key, {"name": "road_closed", "texts": {"da": "Vejen er spærret."}})
    assert r.status_code == 201 and r.json()["placeholders"] == []

    current = await client.get("/v1/templates/burglary_warning", headers=auth(key))
    assert current.status_code == 200 and current.json()["version"] == 2
    assert current.json()["texts"] == {"da": "Indbrud i {area}. Ring 114."}
    old = await client.get("/v1/templates/burglary_warning?version=1", headers=auth(key))
    assert old.status_code == 200 and old.json()["texts"] == BURGLARY["texts"]
    assert_problem(
        await client.get("/v1/templates/burglary_warning?version=3", headers=auth(key)),
        404,
        "no version 3 of template named 'burglary_warning'",
    )
    assert_problem(await client.get("/v1/templates/nothing", headers=auth(key)), 404, "nothing")

    page = await client.get("/v1/templates?limit=1", headers=auth(key))
    assert page.status_code == 200, page.text
    assert [t["name"] for t in page.json()["items"]] == ["road_closed"]
    rest = await client.get(
        f"/v1/templates?limit=5&cursor={page.json()['next_cursor']}", headers=auth(key)
    )
    assert [(t["name"], t["version"]) for t in rest.json()["items"]] == [("burglary_warning", 2)]
    assert rest.json()["next_cursor"] is None

    audited = await pool.fetch(
        "SELECT actor, details FROM audit_log WHERE action = 'template.stored' ORDER BY id"
    )
    assert [(a["actor"], a["details"]["name"], a["details"]["version"]) for a in audited] == [
        ("tests", "burglary_warning", 1),
        ("tests", "burglary_warning", 2),
        ("tests", "road_closed", 1),
    ]


async def test_bad_templates_are_refused_naming_what_is_wrong(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    # The client's service allows 2 segments (306 GSM-7 characters).
    cases = [
        ({"texts": {"en": "Police"}}, "a Danish text ('da') is required"),
        ({"texts": {"da": "Indbrud i {area"}}, "texts.da: the brace at position 11"),
        (
            {"texts": {"da": "Indbrud i {area}", "en": "Burglaries"}},
            "texts.en: every language must use the Danish text's placeholders; this one lacks area",
        ),
        (
            {"texts": {"da": "Indbrud", "en": "Burglaries in {area}"}},
            "this one adds area",
        ),
        (
            {"texts": {"da": "x" * 200 + " {area}"}, "value_lengths": {"area": 120}},
            "texts.da needs 3 SMS segments with each placeholder at its longest",
        ),
        ({"texts": {"da": "x {area}"}, "value_lengths": {"street": 9}}, "no placeholder named"),
        ({"texts": {"da": "x {area}"}, "value_lengths": {"area": 501}}, "value_lengths"),
        ({"texts": {"da": "  "}}, "must not be blank"),
        ({"texts": {"danish": "x"}}, "texts"),
        ({"name": "Burglary Warning", "texts": {"da": "x"}}, "name"),
    ]
    for change, words in cases:
        r = await store(client, key, {"name": "t", **change})
        assert_problem(r, 422, words)
    assert await pool.fetchval("SELECT count(*) FROM templates") == 0
    # 306 characters with the value at its longest is within the limit.
    r = await store(client, key, {"name": "t", "texts": {"da": "x" * 266 + "{area}"}})
    assert r.status_code == 201, r.text


async def test_an_alert_from_a_template_is_rendered_per_language(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    assert (await store(client, key, BURGLARY)).status_code == 201
    body = {"template": "burglary_warning", "values": {"area": "Hillerød"}, "area": CIRCLE}
    r = await client.post("/v1/alerts", headers=auth(key), json=body)
    assert r.status_code == 202, r.text
    alert_id = r.json()["id"]
    row = await pool.fetchrow("SELECT message, multilingual FROM alerts WHERE id = $1", alert_id)
    assert row["message"] == "Politiet: indbrud i Hillerød i nat. Se noget? Ring 114."
    assert row["multilingual"]
    texts = await pool.fetch(
        "SELECT language, message FROM alert_texts WHERE alert_id = $1", alert_id
    )
    assert {t["language"]: t["message"] for t in texts} == {
        "en": "Police: burglaries in Hillerød tonight. Seen anything? Call 114."
    }
    audited = await pool.fetchval(
        "SELECT details FROM audit_log WHERE action = 'alert.created' AND subject = $1",
        f"alert:{alert_id}",
    )
    assert audited["template"] == {
        "name": "burglary_warning",
        "version": 1,
        "values": {"area": "Hillerød"},
    }

    # A new version changes what later alerts say, not what this one says; a repeat of the
    # request with its Idempotency-Key is the same request and gets the same alert.
    key_header = {**auth(key), "Idempotency-Key": "case-4711"}
    first = await client.post("/v1/alerts", headers=key_header, json=body)
    assert first.status_code == 202
    assert (
        await store(client, key, {**BURGLARY, "texts": {"da": "Nyt: {area}"}})
    ).status_code == 201
    again = await client.post("/v1/alerts", headers=key_header, json=body)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert (
        await pool.fetchval("SELECT message FROM alerts WHERE id = $1", alert_id) == row["message"]
    )
    later = await client.post("/v1/alerts", headers=auth(key), json=body)
    assert later.status_code == 202
    assert await pool.fetchval("SELECT message FROM alerts WHERE id = $1", later.json()["id"]) == (
        "Nyt: Hillerød"
    )
    assert not await pool.fetchval(
        "SELECT multilingual FROM alerts WHERE id = $1", later.json()["id"]
    )


async def test_template_values_missing_extra_too_long_unknown_and_overflowing(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    two = {
        "name": "two",
        "texts": {"da": "{who} set i {area}", "en": "{who} seen in {area}"},
        "value_lengths": {"who": 100, "area": 60},
    }
    assert (await store(client, key, two)).status_code == 201

    async def post(**body: object) -> httpx.Response:
        return await client.post(
            "/v1/alerts", headers=auth(key), json={"area": HILLEROD_SQUARE, **body}
        )

    r = await post(template="two", values={"who": "En mand"})
    problem = assert_problem(r, 422, "values: missing area (template 'two')")
    assert (problem["missing"], problem["extra"]) == (["area"], [])
    r = await post(
        template="two", values={"who": "En mand", "area": "Ullerød", "time": "9", "b": "x"}
    )
    problem = assert_problem(r, 422, "values: not in the template: b, time")
    assert (problem["missing"], problem["extra"]) == ([], ["b", "time"])
    r = await post(template="two")
    assert_problem(r, 422, "missing who, area")
    r = await post(template="two", values={"who": "x" * 101, "area": "Ullerød"})
    assert_problem(r, 422, "who is longer than 100 characters")
    r = await post(template="nope", values={})
    problem = assert_problem(r, 422, "template: no template named 'nope'")
    assert problem["title"] == "Unknown template"
    # Within its length, but outside GSM-7 the rendered text is UCS-2: 100 emoji are 200 UTF-16
    # units, then " set i " 7 and the area 60: 267 units. A part holds 67 units but never half
    # a surrogate pair, so the emoji go 33 to a part (66 units): parts 1-3 take 99 of them, the
    # fourth the last emoji and 65 of the other 67 units, the fifth the last 2. Over the 2 allowed.
    r = await post(template="two", values={"who": "🚨" * 100, "area": "x" * 60})
    problem = assert_problem(r, 422, "message (template 'two') needs 5 SMS segments; at most 2")
    assert problem["segments"] == 5
    # message and template are alternatives; texts and values belong to one of them each.
    r = await post(message="x", template="two", values={"who": "a", "area": "b"})
    assert_problem(r, 422, "either message or template")
    assert_problem(await post(), 422, "either message or template")
    r = await post(template="two", values={"who": "a", "area": "b"}, texts={"en": "x"})
    assert_problem(r, 422, "texts come from the template")
    assert_problem(await post(message="x", values={"a": "b"}), 422, "values are for a template")
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0


async def test_templates_need_their_scopes(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        reader = await create_api_key(conn, "reader", ["alerts:read"])
        writer = await create_api_key(conn, "writer", ["alerts:write"])
    assert_problem(await store(client, reader, BURGLARY), 403, "alerts:write")
    assert (await store(client, writer, BURGLARY)).status_code == 201
    assert_problem(await client.get("/v1/templates", headers=auth(writer)), 403, "alerts:read")
    r = await client.get("/v1/templates/burglary_warning", headers=auth(reader))
    assert r.status_code == 200


# ---------------------------------------------------------------- end to end


async def test_each_subscriber_gets_the_template_in_their_language_or_danish(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    stack.start_simulator("--receipt-delay-ms", "20")
    stack.write_config(rate=1000, max_batch=100)
    stack.start_service()
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "e2e")
    languages = {"+4526123461": "da", "+4526123462": "en", "+4526123463": "de"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=auth(key)) as http:
        for phone, language in languages.items():
            r = await http.post(
                "/v1/subscribers",
                json={
                    "phone": phone,
                    "language": language,
                    "locations": [{"lat": 55.93, "lon": 12.3}],
                },
            )
            assert r.status_code == 201, r.text
        assert (await http.post("/v1/templates", json=BURGLARY)).status_code == 201
        r = await http.post(
            "/v1/alerts",
            json={"template": "burglary_warning", "values": {"area": "Ullerød"}, "area": CIRCLE},
        )
        assert r.status_code == 202, r.text
        alert_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while (status := (await http.get(f"/v1/alerts/{alert_id}")).json())["deliveries"][
            "delivered"
        ] < 3:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            messages = (await sim.get("/_sim/messages")).json()
    got = {"+" + str(m["msisdn"]): m["message"] for m in messages}
    danish = "Politiet: indbrud i Ullerød i nat. Se noget? Ring 114."
    assert got == {
        "+4526123461": danish,
        "+4526123462": "Police: burglaries in Ullerød tonight. Seen anything? Call 114.",
        "+4526123463": danish,  # no German text: Danish
    }
