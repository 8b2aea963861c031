"""Inbound SMS end to end, as the providers send them: the gateway simulators post signed
webhooks (`/_sim/inbound`) to `broadcaster api` processes, the SMSC simulator sends deliver_sm to
a dispatcher; STOP while an alert to the number is queued, and during a running broadcast,
keeps every further SMS but the confirmation from the number."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
from tests.stack import Stack
from tests.test_failover import Running, wait_for
from tests.test_fanout import DONUT, queue_alert
from tests.test_smpp_dispatch import smpp_gateway

from broadcaster.citizens.texts import text
from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.settings import load_settings
from gateway_adapters.smpp_codec import ESME_ROK
from gateway_simulators.smpp import SmscOptions, SmscSimulator

ALERT_TEXT = "test"  # queue_alert's message
DONE = "SELECT count(*) = 0 FROM deliveries WHERE status IN ('queued', 'sending')"


async def seed(pool: asyncpg.Pool, n: int) -> list[str]:
    """n active subscribers inside DONUT, numbered +4521000001, ...; their numbers."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscribers (phone) "
            "SELECT '+4521' || lpad(g::text, 6, '0') FROM generate_series(1, $1) g",
            n,
        )
        await conn.execute(
            "INSERT INTO subscriber_locations (subscriber_id, position) "
            "SELECT id, point(12.05e6, 55.05e6) FROM subscribers"
        )
        return [r["phone"] for r in await conn.fetch("SELECT phone FROM subscribers ORDER BY id")]


async def inbound(sim_url: str, phone: str, words: str) -> dict[str, Any]:
    """Have the simulator post a citizen's SMS as the provider would; the API's answer."""
    async with httpx.AsyncClient(base_url=sim_url, timeout=10) as sim:
        r = await sim.post("/_sim/inbound", json={"from": phone, "text": words})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def sent_to(sim_url: str) -> dict[str, list[str]]:
    """Number -> the texts the gateway took for it."""
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        messages = (await sim.get("/_sim/messages")).json()
    out: dict[str, list[str]] = {}
    for m in messages:
        number = m.get("to") or f"+{m['msisdn']}"
        out.setdefault(number, []).append(m.get("body") or m.get("message"))
    return out


async def test_stop_while_an_alert_to_the_number_is_queued_keeps_it_from_the_number(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    phones = await seed(pool, 50)
    stack.start_simulator("--inbound-url", f"{stack.api_url}/v1/inbound/primary")
    stack.write_config(rate=1000)
    stack.start_service("api")
    async with pool.acquire() as conn:
        alert = await queue_alert(conn, DONUT)
        await fan_out_next(conn)  # queued for all 50; no dispatcher runs yet
    stopped = phones[10]
    answer = await inbound(stack.sim_url, stopped, " Stop. ")
    assert answer["status"] == 200 and answer["body"] == '{"received":1}'
    stack.start_dispatcher("dispatcher")
    await wait_for(pool, DONE)
    received = await sent_to(stack.sim_url)
    assert received[stopped] == [text("stop", "da", "Broadcaster")]  # only the confirmation
    assert all(received[p] == [ALERT_TEXT] for p in phones if p != stopped)
    row = await pool.fetchrow(
        """SELECT d.status, d.error FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
           WHERE d.alert_id = $1 AND s.phone = $2""",
        alert,
        stopped,
    )
    assert (row["status"], row["error"]) == ("cancelled", "subscriber opted out by SMS")


async def test_stop_from_numbers_with_deliveries_queued_in_a_running_broadcast(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    phones = await seed(pool, 2000)
    stack.start_simulator("--inbound-url", f"{stack.api_url}/v1/inbound/primary")
    stack.write_config(rate=400, max_batch=50, concurrency=2)
    stack.start_service("serve")
    async with pool.acquire() as conn:
        alert = await queue_alert(conn, DONUT)
    async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
        deadline = time.monotonic() + 30
        while (await sim.get("/_sim/stats")).json()["recipients"] < 200:
            assert time.monotonic() < deadline, "the broadcast did not start"
            await asyncio.sleep(0.05)
    # Numbers at the back of the queue, their deliveries still queued: STOP, in both languages.
    stopped = phones[-5:]
    queued = await pool.fetchval(
        """SELECT count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
           WHERE d.alert_id = $1 AND d.status = 'queued' AND s.phone = ANY($2::text[])""",
        alert,
        stopped,
    )
    assert queued == 5
    answers = await asyncio.gather(
        *(
            inbound(stack.sim_url, p, w)
            for p, w in zip(stopped, ["STOP", "afmeld", "Stopp!"] * 2, strict=False)
        )
    )
    assert {a["status"] for a in answers} == {200}
    await wait_for(pool, DONE, timeout=60)
    received = await sent_to(stack.sim_url)
    for phone in stopped:
        assert received[phone] == [text("stop", "da", "Broadcaster")], phone
    assert sum(1 for p in phones if ALERT_TEXT in received.get(p, [])) == 2000 - 5
    counts = dict(
        await pool.fetch(
            "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY status", alert
        )
    )
    assert counts.get("cancelled") == 5


async def test_twilio_incoming_messages_through_the_processes(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    (phone,) = await seed(pool, 1)
    stack.start_simulator("--inbound-url", f"{stack.api_url}/v1/inbound/primary", protocol="twilio")
    stack.write_config(rate=100, kind="twilio")
    stack.start_service("serve")
    answer = await inbound(stack.sim_url, phone, "HELP")
    assert answer["status"] == 200 and answer["content_type"] == "text/xml", answer
    assert answer["body"].endswith("<Response/>")
    deadline = time.monotonic() + 20
    while not (received := await sent_to(stack.sim_url)).get(phone):
        assert time.monotonic() < deadline, "the answer did not go out"
        await asyncio.sleep(0.1)
    assert received[phone] == [text("help", "da", "Broadcaster")]  # the subscriber's language
    # A message the provider posts again (its retry) is stored once.
    again = await inbound_with_id(stack.sim_url, phone, "HELP", answer["id"])
    assert again["status"] == 200
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == 1


async def inbound_with_id(sim_url: str, phone: str, words: str, message_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sim_url, timeout=10) as sim:
        r = await sim.post("/_sim/inbound", json={"from": phone, "text": words, "id": message_id})
        return dict(r.json())


async def test_smpp_inbound_messages_through_the_dispatcher(
    db_url: str, pool: asyncpg.Pool
) -> None:
    phones = await seed(pool, 3)
    smsc = SmscSimulator(SmscOptions(system_id="sim", password="sim-pass"))
    port = await smsc.start()
    settings = load_settings(database_url=db_url, poll_interval=0.05, gateways=[smpp_gateway(port)])
    running = Running(settings, pool, db_url)
    try:
        async with pool.acquire() as conn:
            alert = await queue_alert(conn, DONUT)
        await wait_for(pool, DONE)
        await wait_for(
            pool, "SELECT count(*) = 3 FROM deliveries WHERE status IN ('sent', 'delivered')"
        )
        tip = "Jeg så en hvid varevogn ved stationen kl. 9.40, den kørte mod nord. " * 3
        assert await smsc.deliver_mo(phones[0][1:], "POLITI", tip, concat="sar") == ESME_ROK
        assert await smsc.deliver_mo(phones[1][1:], "POLITI", "unsubscribe") == ESME_ROK
        await wait_for(
            pool,
            "SELECT count(*) = 1 FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE a.kind = 'notice' AND d.status IN ('sent', 'delivered')",
        )
    finally:
        await running.close()
        await smsc.close()
    rows = await pool.fetch(
        "SELECT gateway, phone, text, kind, alert_id FROM inbound_messages ORDER BY id"
    )
    assert [(r["gateway"], r["phone"], r["kind"], r["alert_id"]) for r in rows] == [
        ("operator", phones[0], "tip", alert),
        ("operator", phones[1], "stop", None),
    ]
    assert rows[0]["text"] == tip  # reassembled from its parts
    status = await pool.fetchval("SELECT status FROM subscribers WHERE phone = $1", phones[1])
    assert status == "opted_out"
    confirmation = [m for m in smsc.messages if m["destination_addr"] == phones[1][1:]]
    assert [m["text"] for m in confirmation] == [ALERT_TEXT, text("stop", "da", "Broadcaster")]
