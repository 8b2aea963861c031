"""Refusals by the provider or the carrier, end to end through the dispatcher and a real
PostgreSQL: a blacklisted number does not hold up an emergency alert, a number that answered STOP
is never messaged again (on submission and in a status callback), and an expired alert never
goes out through Twilio."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from tests.stack import Stack
from tests.test_e2e import post_alert, seeded, simulator_messages, wait_final
from tests.test_failover import FANNED, OPEN, Running, gateway, wait_for
from tests.test_fanout import DONUT, add_subscribers, queue_alert

from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.settings import GatewaySettings, load_settings
from gateway_simulators.gatewayapi import GatewaySimulator, SimulatorOptions
from gateway_simulators.twilio import TwilioSimulator, TwilioSimulatorOptions

__all__ = ["seeded"]  # a fixture used here

SECRET = "failover-test-secret-0123456789abcdef"
TWILIO_TOKEN = "ACtest:auth-token"


def twilio_gateway(port: int, **extra: Any) -> GatewaySettings:
    return GatewaySettings(
        name="twilio",
        type="twilio",
        base_url=f"http://127.0.0.1:{port}",
        token=TWILIO_TOKEN,
        rate_per_second=5_000,
        max_batch=50,
        concurrency=4,
        sender="+4570000000",
        **extra,
    )


async def start_twilio(**options: Any) -> tuple[TwilioSimulator, int]:
    sim = TwilioSimulator(TwilioSimulatorOptions(token=TWILIO_TOKEN, hold_receipts=True, **options))
    return sim, await sim.start()


async def test_emergency_to_1000_with_one_blacklisted_reaches_the_other_999_at_once(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(1000)])
        blacklisted = await conn.fetchval("SELECT phone FROM subscribers WHERE id = $1", ids[500])
    sim = GatewaySimulator(
        SimulatorOptions(
            token="t",
            webhook_secret=SECRET,
            hold_receipts=True,
            blacklisted=(int(blacklisted[1:]),),
        )
    )
    port = await sim.start()
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        max_attempts=1,
        breaker_failures=1,
        gateways=[gateway("primary", port, max_batch=1000)],
    )
    running = Running(settings, pool, db_url)
    try:
        async with pool.acquire() as conn:
            alert = await queue_alert(conn, DONUT, "emergency")
        started = time.monotonic()
        await wait_for(pool, FANNED, alert)
        await wait_for(pool, OPEN, alert, timeout=10)
        took = time.monotonic() - started
        assert running.dispatcher.lanes[0].breaker.state == "closed"  # not a broken account
    finally:
        await running.close()
        await sim.close()
    rows = await pool.fetch(
        "SELECT s.phone, d.status, d.error, d.attempts FROM deliveries d "
        "JOIN subscribers s ON s.id = d.subscriber_id WHERE d.alert_id = $1",
        alert,
    )
    by_status: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert len(by_status["sent"]) == 999
    [failed] = by_status["failed"]
    assert failed["phone"] == blacklisted
    assert failed["error"] == "gatewayapi 0x0215: MSISDN %1 blacklisted"
    assert {r["attempts"] for r in rows} == {1}  # nobody burnt an attempt on it
    assert took < 5, took
    assert sorted(f"+{m['msisdn']}" for m in sim.messages) == sorted(
        r["phone"] for r in rows if r["status"] == "sent"
    )
    assert {m["class"] for m in sim.messages} == {"premium"}


async def test_stop_on_submission_opts_the_number_out_of_every_later_alert(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(20)])
        stopped = await conn.fetchval("SELECT phone FROM subscribers WHERE id = $1", ids[7])
    sim, port = await start_twilio(opted_out=(stopped,))
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[twilio_gateway(port)]
    )
    running = Running(settings, pool, db_url)
    try:
        async with pool.acquire() as conn:
            first = await queue_alert(conn, DONUT)
        await wait_for(pool, FANNED, first)
        await wait_for(pool, OPEN, first)
        async with pool.acquire() as conn:
            second = await queue_alert(conn, DONUT, "emergency")
        await wait_for(pool, FANNED, second)
        await wait_for(pool, OPEN, second)
    finally:
        await running.close()
        await sim.close()
    subscriber = await pool.fetchrow(
        "SELECT status, opted_out_at, opt_out_reason FROM subscribers WHERE id = $1", ids[7]
    )
    assert subscriber["status"] == "opted_out" and subscriber["opted_out_at"] is not None
    assert "twilio" in subscriber["opt_out_reason"] and "21610" in subscriber["opt_out_reason"]
    first_row = await pool.fetchrow(
        "SELECT status, error FROM deliveries WHERE alert_id = $1 AND subscriber_id = $2",
        first,
        ids[7],
    )
    assert first_row["status"] == "failed" and first_row["error"].startswith("twilio 21610")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND subscriber_id = $2",
            second,
            ids[7],
        )
        == 0
    )  # the second alert left the number out
    assert [m["to"] for m in sim.messages].count(stopped) == 0
    assert len(sim.messages) == 2 * 19


async def test_an_expired_alert_never_goes_out_through_twilio(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(30)])
        expired = await queue_alert(conn, DONUT)
        await conn.execute(
            "UPDATE alerts SET expires_at = now() + interval '1 hour' WHERE id = $1", expired
        )
        assert await fan_out_next(conn) is not None  # fanned out while it was still valid
        # ... and it expires before a dispatcher gets to it.
        await conn.execute(
            "UPDATE alerts SET expires_at = now() - interval '1 second' WHERE id = $1", expired
        )
        lasting = await queue_alert(conn, DONUT)
        await conn.execute(
            "UPDATE alerts SET expires_at = now() + interval '5 minutes' WHERE id = $1", lasting
        )
    sim, port = await start_twilio()
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[twilio_gateway(port)]
    )
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, lasting)
        await wait_for(pool, OPEN, lasting)
        await wait_for(pool, OPEN, expired)
    finally:
        await running.close()
        await sim.close()
    statuses = dict(
        await pool.fetch(
            "SELECT alert_id, array_agg(DISTINCT status) FROM deliveries GROUP BY alert_id"
        )
    )
    assert statuses == {expired: ["expired"], lasting: ["sent"]}
    assert len(sim.messages) == 30  # only the lasting alert's
    assert all(280 <= m["validity_period"] <= 300 for m in sim.messages)


async def test_stop_in_a_status_callback_keeps_the_next_alert_from_the_number(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    """Real processes: Twilio's simulator reports one number failed with ErrorCode 21610 in its
    signed status callback to the API; the next alert no longer reaches that number."""
    _, _, key = seeded
    circle = {"type": "Circle", "center": [12.3111, 55.9267], "radius_m": 3_000.0}
    # A subscriber inside the circle: the one who will answer STOP.
    inside = await pool.fetchval(
        "SELECT s.phone FROM subscribers s JOIN subscriber_locations l ON l.subscriber_id = s.id "
        "WHERE s.status = 'active' ORDER BY l.position <-> point(12.3111e6, 55.9267e6) LIMIT 1"
    )
    stack.start_simulator(
        "--receipt-delay-ms", "20", "--opted-out-later", inside, protocol="twilio"
    )
    stack.write_config(rate=5_000, max_batch=50, concurrency=8, kind="twilio")
    stack.start_service()
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        first = await post_alert(http, key, circle)
        status = await wait_final(http, first, key)
        assert status["deliveries"]["failed"] >= 1
        deadline = time.monotonic() + 30
        while await pool.fetchval("SELECT status FROM subscribers WHERE phone = $1", inside) != (
            "opted_out"
        ):
            assert time.monotonic() < deadline, "the 21610 callback did not opt the number out"
            await asyncio.sleep(0.1)
        before = len(await simulator_messages(stack.sim_url))
        second = await post_alert(http, key, circle, priority="emergency")
        second_status = await wait_final(http, second, key)
    messages = await simulator_messages(stack.sim_url)
    assert [m["to"] for m in messages].count(inside) == 1  # the first alert only
    assert len(messages) - before == second_status["recipients"] == status["recipients"] - 1
    reason = await pool.fetchval("SELECT opt_out_reason FROM subscribers WHERE phone = $1", inside)
    assert "21610" in reason
    assert datetime.now(UTC) - timedelta(minutes=5) < await pool.fetchval(
        "SELECT opted_out_at FROM subscribers WHERE phone = $1", inside
    )
