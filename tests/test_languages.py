"""An alert in several languages: each subscriber gets the text in their language, everyone else
the alert's message; through the API, a real dispatcher and the GatewayAPI simulator."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
from tests.test_api import auth
from tests.test_api import client as client
from tests.test_api import key as key
from tests.test_failover import Running, gateway, start_sim

from broadcaster.settings import load_settings

CIRCLE = {"type": "Circle", "center": [12.30, 55.93], "radius_m": 1000}


async def test_each_subscriber_gets_the_text_in_their_language(
    client: httpx.AsyncClient,
    key: str,
    pool: asyncpg.Pool,
    db_url: str,
) -> None:
    languages = {"+4526123461": "da", "+4526123462": "en", "+4526123463": "de", "+4526123464": "en"}
    for phone, language in languages.items():
        r = await client.post(
            "/v1/subscribers",
            headers=auth(key),
            json={"phone": phone, "language": language, "locations": [{"lat": 55.93, "lon": 12.3}]},
        )
        assert r.status_code == 201, r.text
    body = {
        "message": "Politiet: indbrud i området.",
        "texts": {"en": "Police: burglaries in the area."},
        "area": CIRCLE,
    }
    r = await client.post("/v1/alerts", headers=auth(key), json=body)
    assert r.status_code == 202, r.text
    sim, port = await start_sim()
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[gateway("gw", port)]
    )
    running = Running(settings, pool, db_url)
    try:
        deadline = time.monotonic() + 15
        while len(sim.messages) < 4:
            assert time.monotonic() < deadline, sim.messages
            await asyncio.sleep(0.05)
    finally:
        await running.close()
        await sim.close()
    got = {"+" + str(m["msisdn"]): m["message"] for m in sim.messages}
    assert got == {
        "+4526123461": body["message"],
        "+4526123462": body["texts"]["en"],
        "+4526123463": body["message"],  # no German text: the message
        "+4526123464": body["texts"]["en"],
    }


async def test_every_text_is_checked(
    client: httpx.AsyncClient,
    key: str,
    pool: asyncpg.Pool,
) -> None:
    for texts, words in [
        ({"en": "x" * 400}, "texts.en needs 3 SMS segments"),
        ({"en": "  "}, "must not be blank"),
        ({"english": "x"}, "texts"),
        ({"en": "a\u0000b"}, "U+0000"),
    ]:
        r = await client.post(
            "/v1/alerts", headers=auth(key), json={"message": "x", "area": CIRCLE, "texts": texts}
        )
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0
