"""Fail-over between gateways, cancellation mid-broadcast, and live dispatchers counted:
in-process dispatchers, a real PostgreSQL, simulators on free ports."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from tests.test_fanout import DONUT, add_subscribers, queue_alert

from broadcaster.dispatch.dispatcher import Dispatcher
from broadcaster.ingest.alerts import cancel_alert
from broadcaster.settings import GatewaySettings, Settings, load_settings
from gateway_adapters.registry import create_adapter
from gateway_simulators.gatewayapi import GatewaySimulator, SimulatorOptions

SECRET = "failover-test-secret-0123456789abcdef"


async def start_sim(**options: object) -> tuple[GatewaySimulator, int]:
    sim = GatewaySimulator(
        SimulatorOptions(token="t", webhook_secret=SECRET, hold_receipts=True, **options)  # type: ignore[arg-type]
    )
    return sim, await sim.start()


def gateway(name: str, port: int, rate: float = 10_000, max_batch: int = 100) -> GatewaySettings:
    return GatewaySettings(
        name=name,
        type="gatewayapi",
        base_url=f"http://127.0.0.1:{port}",
        token="t",
        webhook_secret=SECRET,
        rate_per_second=rate,
        max_batch=max_batch,
        concurrency=2,
    )


class Running:
    """A dispatcher running in a task of this event loop."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, db_url: str, name: str = "d"
    ) -> None:
        self.adapters = [
            create_adapter(g, "http://127.0.0.1:9/cb") for g in settings.gateway_configs()
        ]
        self.dispatcher = Dispatcher(settings, pool, self.adapters, db_url, worker=name)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.dispatcher.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)
        for a in self.adapters:
            await a.close()


async def wait_for(pool: asyncpg.Pool, sql: str, *args: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await pool.fetchval(sql, *args):
        assert time.monotonic() < deadline, f"timed out waiting for: {sql}"
        await asyncio.sleep(0.05)


OPEN = "SELECT count(*) = 0 FROM deliveries WHERE alert_id = $1 AND status IN ('queued', 'sending')"
FANNED = "SELECT status <> 'queued' FROM alerts WHERE id = $1"


@pytest.fixture
async def sims() -> AsyncIterator[tuple[GatewaySimulator, int, GatewaySimulator, int]]:
    a, pa = await start_sim(failure_ratio=1.0)
    b, pb = await start_sim()
    yield a, pa, b, pb
    await a.close()
    await b.close()


async def test_traffic_moves_to_the_second_gateway_and_back(
    db_url: str, pool: asyncpg.Pool, sims: tuple
) -> None:
    primary, pa, secondary, pb = sims
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        breaker_failures=2,
        breaker_open_seconds=0.5,
        gateways=[gateway("primary", pa), gateway("secondary", pb)],
    )
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(300)])
        first = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, first)
        await wait_for(pool, OPEN, first)
        by_gateway = dict(
            await pool.fetch(
                "SELECT gateway, count(*) FROM deliveries WHERE alert_id = $1 AND status = 'sent' "
                "GROUP BY gateway",
                first,
            )
        )
        assert by_gateway == {"secondary": 300}  # nobody missed, all through the second
        assert primary.messages == [] and len(secondary.messages) == 300
        # The primary recovers: a half-open probe succeeds and traffic moves back.
        primary.options.failure_ratio = 0.0
        await asyncio.sleep(0.6)
        async with pool.acquire() as conn:
            second = await queue_alert(conn, DONUT)
        await wait_for(pool, FANNED, second)
        await wait_for(pool, OPEN, second)
        by_gateway = dict(
            await pool.fetch(
                "SELECT gateway, count(*) FROM deliveries WHERE alert_id = $1 AND status = 'sent' "
                "GROUP BY gateway",
                second,
            )
        )
        assert sum(by_gateway.values()) == 300
        # The probe batch went to the primary; while it was in flight others used the second.
        assert by_gateway.get("primary", 0) >= 100, by_gateway
        async with pool.acquire() as conn:
            third = await queue_alert(conn, DONUT)
        await wait_for(pool, FANNED, third)
        await wait_for(pool, OPEN, third)
        by_gateway = dict(
            await pool.fetch(
                "SELECT gateway, count(*) FROM deliveries WHERE alert_id = $1 AND status = 'sent' "
                "GROUP BY gateway",
                third,
            )
        )
        assert by_gateway == {"primary": 300}  # the circuit is closed again: all back
    finally:
        await running.close()
    phones = [m["msisdn"] for m in primary.messages + secondary.messages]
    assert len(phones) == 900 and len(set(phones)) == 300  # each subscriber once per alert


async def test_cancel_stops_submissions_within_a_second(
    db_url: str, pool: asyncpg.Pool, sims: tuple
) -> None:
    _, _, sim, port = sims
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        gateways=[gateway("primary", port, rate=200, max_batch=50)],
    )
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(1000)])
        alert = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    try:
        while len(sim.messages) < 100:
            await asyncio.sleep(0.02)
        async with pool.acquire() as conn:
            assert await cancel_alert(conn, alert)
        await asyncio.sleep(1.0)
        after_one_second = len(sim.messages)
        await asyncio.sleep(1.0)
        assert len(sim.messages) == after_one_second  # nothing new after the first second
        await wait_for(pool, OPEN, alert)
    finally:
        await running.close()
    counts = dict(
        await pool.fetch(
            "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY status", alert
        )
    )
    assert counts.get("sent", 0) == len(sim.messages)
    assert counts.get("cancelled", 0) == 1000 - len(sim.messages) > 500
    assert await pool.fetchval("SELECT status FROM alerts WHERE id = $1", alert) == "cancelled"


async def test_live_dispatchers_are_counted_and_share_one_bucket(
    db_url: str, pool: asyncpg.Pool, sims: tuple
) -> None:
    """The rate limit is one bucket in PostgreSQL whoever runs (test_account_limit.py measures
    it at the gateway); the heartbeats still count live dispatchers for operators."""
    _, _, _, port = sims
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[gateway("primary", port, rate=600)]
    )
    one = Running(settings, pool, db_url, "one")
    two = Running(settings, pool, db_url, "two")
    try:
        await asyncio.sleep(2.0)
        for r in (one, two):
            assert r.dispatcher._live == 2
            assert r.dispatcher.lanes[0].bucket.rate == pytest.approx(600)
        assert await pool.fetchval("SELECT array_agg(gateway) FROM rate_buckets") == ["primary"]
        await two.close()
        deadline = time.monotonic() + 5
        while one.dispatcher._live != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert await pool.fetchval("SELECT array_agg(worker) FROM dispatchers") == ["one"]
    finally:
        await one.close()
        if not two.task.done():
            await two.close()


async def test_gateway_down_for_ten_seconds_then_back_mid_broadcast(
    db_url: str, pool: asyncpg.Pool
) -> None:
    """The preferred gateway stops answering (connection refused) for 10 s during a
    rate-limited broadcast: traffic moves to the second gateway and back once it returns."""
    primary, pa = await start_sim()
    secondary, pb = await start_sim()
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        breaker_failures=2,
        breaker_open_seconds=0.5,
        gateways=[
            gateway("primary", pa, rate=150, max_batch=30),
            gateway("secondary", pb, rate=150, max_batch=30),
        ],
    )
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscribers (phone) SELECT '+4532' || lpad(g::text, 6, '0') "
            "FROM generate_series(1, 2400) g"
        )
        await conn.execute(
            "INSERT INTO subscriber_locations (subscriber_id, position) "
            "SELECT id, point(12.05e6 + id, 55.05e6) FROM subscribers"
        )
        alert = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    try:
        while len(primary.messages) < 100:
            await asyncio.sleep(0.02)
        await primary.close()  # down: connections refused
        await asyncio.sleep(10.0)
        restarted = datetime.now(UTC)
        primary = GatewaySimulator(primary.options)
        await primary.start(port=pa)  # back on the same port
        await wait_for(pool, FANNED, alert)
        await wait_for(pool, OPEN, alert, timeout=60)
    finally:
        await running.close()
        await primary.close()
        await secondary.close()
    rows = await pool.fetch(
        "SELECT gateway, status, sent_at FROM deliveries WHERE alert_id = $1", alert
    )
    assert len(rows) == 2400 and {r["status"] for r in rows} == {"sent"}  # nobody missed
    via = Counter(r["gateway"] for r in rows)
    assert via["secondary"] >= 1000  # it carried the traffic during the outage
    back = sum(1 for r in rows if r["gateway"] == "primary" and r["sent_at"] > restarted)
    assert back > 0  # and traffic moved back


async def test_gateway_timing_out_fails_over(db_url: str, pool: asyncpg.Pool) -> None:
    slow, ps = await start_sim(latency_ms=2000)
    fast, pf = await start_sim()
    primary = gateway("primary", ps).model_copy(update={"timeout_seconds": 0.2})
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        breaker_failures=1,
        breaker_open_seconds=30,
        gateways=[primary, gateway("fast", pf)],
    )
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(50)])
        alert = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, alert)
        await wait_for(pool, OPEN, alert)
    finally:
        await running.close()
        await slow.close()
        await fast.close()
    rows = await pool.fetch("SELECT gateway, status, attempts FROM deliveries")
    assert {(r["gateway"], r["status"]) for r in rows} == {("fast", "sent")}
    assert len(fast.messages) == 50


async def test_smpp_broadcast_with_receipts_over_the_connection(
    db_url: str, pool: asyncpg.Pool
) -> None:
    """SMPP end to end through the dispatcher: submit_sm to the SMSC simulator, receipts back
    as deliver_sm (ids in another base) committed through the dispatcher's sink."""
    from gateway_simulators.smpp import SmscOptions, SmscSimulator

    smsc = SmscSimulator(SmscOptions(receipt_delay_ms=20, delivered_ratio=0.9, seed=3))
    port = await smsc.start()
    smpp = GatewaySettings(
        name="operator",
        type="smpp",
        base_url=f"smpp://127.0.0.1:{port}",
        token="sim:sim-pass",
        rate_per_second=5_000,
        max_batch=50,
        concurrency=2,
        sender="POLITI",
    )
    settings = load_settings(database_url=db_url, poll_interval=0.05, gateways=[smpp])
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(200)])
        long_text = "Politiet: " + "bliv indendørs og luk vinduerne. " * 6  # 2 SMS parts
        alert_id = await queue_alert(conn, DONUT)
        await conn.execute("UPDATE alerts SET message = $2 WHERE id = $1", alert_id, long_text)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, alert_id)
        await wait_for(
            pool, "SELECT count(*) = 0 FROM deliveries WHERE status NOT IN ('delivered', 'failed')"
        )
    finally:
        await running.close()
        await smsc.close()
    counts = dict(await pool.fetch("SELECT status, count(*) FROM deliveries GROUP BY status"))
    assert sum(counts.values()) == 200
    assert 150 < counts["delivered"] < 200
    assert len(smsc.messages) == 200  # reassembled long messages, one per recipient
    assert {m["text"] for m in smsc.messages} == {long_text}


async def test_a_gateway_refusing_to_bind_does_not_stop_the_others(
    db_url: str, pool: asyncpg.Pool
) -> None:
    from gateway_simulators.smpp import SmscSimulator

    smsc = SmscSimulator()
    port = await smsc.start()
    fallback, pf = await start_sim()
    wrong = GatewaySettings(
        name="operator",
        type="smpp",
        base_url=f"smpp://127.0.0.1:{port}",
        token="sim:wrongpw",
        rate_per_second=5_000,
    )
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[wrong, gateway("fallback", pf)]
    )
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(20)])
        alert = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, alert)
        await wait_for(pool, OPEN, alert)
        assert not running.task.done()
    finally:
        await running.close()
        await smsc.close()
        await fallback.close()
    assert len(fallback.messages) == 20 and smsc.messages == []


async def test_throttling_simulator_is_honoured_and_costs_no_attempt(
    db_url: str, pool: asyncpg.Pool
) -> None:
    sim, port = await start_sim(
        throttle_ratio=0.4, throttle_retry_after=0.2, drop_ratio=0.0, seed=5
    )
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        max_attempts=1,
        gateways=[gateway("primary", port, max_batch=10)],
    )
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(100)])
        alert = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, alert)
        await wait_for(pool, OPEN, alert)
    finally:
        await running.close()
        await sim.close()
    rows = await pool.fetch("SELECT status, attempts FROM deliveries")
    # With max_attempts=1 a counted throttle would have failed deliveries.
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert sim.stats.rejected_requests > 0
    msisdns = [m["msisdn"] for m in sim.messages]
    assert len(msisdns) == len(set(msisdns)) == 100


async def test_throttling_halves_the_rate_and_it_recovers_gradually(
    db_url: str, pool: asyncpg.Pool
) -> None:
    sim, port = await start_sim(throttle_ratio=1.0, throttle_retry_after=0.1)
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        gateways=[gateway("primary", port, rate=1000, max_batch=10)],
    )
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(400)])
        alert = await queue_alert(conn, DONUT)
    running = Running(settings, pool, db_url)
    lane = running.dispatcher.lanes[0]
    try:
        await wait_for(pool, FANNED, alert)
        deadline = time.monotonic() + 10
        while lane.speed > 0.25:  # several throttling episodes
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert lane.bucket.rate <= 250
        sim.options.throttle_ratio = 0.0  # the gateway recovers
        await wait_for(pool, OPEN, alert)
        assert 0.25 < lane.speed  # regained step by step with the successful batches
    finally:
        await running.close()
        await sim.close()


async def test_emergency_first_sms_within_a_second_during_a_large_broadcast(
    db_url: str, pool: asyncpg.Pool
) -> None:
    sim, port = await start_sim()
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.5,
        gateways=[gateway("primary", port, rate=2000, max_batch=500)],
    )
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscribers (phone) SELECT '+4533' || lpad(g::text, 6, '0') "
            "FROM generate_series(1, 20000) g"
        )
        await conn.execute(
            "INSERT INTO subscriber_locations (subscriber_id, position) "
            "SELECT id, point(12.05e6 + id, 55.05e6) FROM subscribers"
        )
        big = await queue_alert(conn, DONUT, "normal")
    running = Running(settings, pool, db_url)
    try:
        while len(sim.messages) < 2000:  # the normal broadcast is well under way
            await asyncio.sleep(0.02)
        posted = time.monotonic()
        async with pool.acquire() as conn:
            emergency = await queue_alert(
                conn, {"type": "Circle", "center": [12.06, 55.05], "radius_m": 50}, "emergency"
            )
        while not any(m["userref"] == str(emergency) for m in sim.messages):
            assert time.monotonic() - posted < 1.0, "no emergency SMS within 1 s"
            await asyncio.sleep(0.01)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status IN "
                "('queued', 'sending')",
                big,
            )
            > 0
        )  # the big one was still running
    finally:
        await running.close()
        await sim.close()
