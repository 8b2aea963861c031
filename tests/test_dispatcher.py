"""The dispatcher in-process against a real PostgreSQL and the simulator on a free port:
expiry, opt-out after fan-out, and bounded retries of a failing gateway."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web
from tests.test_fanout import DONUT, add_subscribers, queue_alert

from broadcaster.dispatch.dispatcher import Dispatcher
from broadcaster.settings import GatewaySettings, load_settings
from gateway_adapters.registry import create_adapter
from gateway_simulators.gatewayapi import GatewaySimulator, SimulatorOptions

SECRET = "dispatcher-test-secret-0123456789abcdef"


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[GatewaySimulator]:
    options = getattr(request, "param", {})
    sim = GatewaySimulator(
        SimulatorOptions(token="t", webhook_secret=SECRET, hold_receipts=True, **options)
    )
    sim.port = await sim.start()  # type: ignore[attr-defined]
    yield sim
    await sim.close()


async def dispatch_until(
    db_url: str,
    pool: asyncpg.Pool,
    sim: GatewaySimulator,
    done: Callable[[], object],
    **settings: object,
) -> None:
    gateway = GatewaySettings(
        name="primary",
        type="gatewayapi",
        base_url=f"http://127.0.0.1:{sim.port}",  # type: ignore[attr-defined]
        token="t",
        webhook_secret=SECRET,
        rate_per_second=10_000,
    )
    config = load_settings(database_url=db_url, gateways=[gateway], poll_interval=0.05, **settings)
    adapter = create_adapter(gateway.to_config(), "http://127.0.0.1:9/v1/callbacks/primary")
    stop = asyncio.Event()
    task = asyncio.create_task(Dispatcher(config, pool, [adapter], db_url).run(stop))
    try:
        deadline = time.monotonic() + 30
        while not await done():  # type: ignore[misc]
            assert time.monotonic() < deadline, "dispatcher did not finish"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await adapter.close()


def no_open(pool: asyncpg.Pool) -> Callable[[], object]:
    async def check() -> bool:
        fanned = await pool.fetchval("SELECT count(*) FROM alerts WHERE status = 'queued'")
        open_ = await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')"
        )
        return bool(fanned == 0 and open_ == 0)

    return check


async def test_nothing_is_submitted_after_expiry(
    db_url: str, pool: asyncpg.Pool, simulator: GatewaySimulator
) -> None:
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(30)])
        expired = await queue_alert(conn, DONUT)
        await conn.execute("UPDATE alerts SET expires_at = now() - interval '1 second'")
    await dispatch_until(db_url, pool, simulator, no_open(pool))
    assert await pool.fetchval("SELECT status FROM alerts WHERE id = $1", expired) == "expired"
    assert simulator.messages == []
    # Expiring between fan-out and submission: the deliveries end as expired.
    async with pool.acquire() as conn:
        later = await queue_alert(conn, DONUT)
        await conn.execute(
            "UPDATE alerts SET expires_at = $2 WHERE id = $1",
            later,
            datetime.now(UTC) + timedelta(seconds=60),
        )
        from broadcaster.dispatch.fanout import fan_out_next

        await fan_out_next(conn)
        await conn.execute("UPDATE alerts SET expires_at = now() WHERE id = $1", later)
    await dispatch_until(db_url, pool, simulator, no_open(pool))
    states = await pool.fetch(
        "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY status", later
    )
    assert [(r["status"], r["count"]) for r in states] == [("expired", 30)]
    assert simulator.messages == []


async def test_opted_out_after_fan_out_receive_nothing(
    db_url: str, pool: asyncpg.Pool, simulator: GatewaySimulator
) -> None:
    from broadcaster.dispatch.fanout import fan_out_next

    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(20)])
        await queue_alert(conn, DONUT)
        await fan_out_next(conn)
        await conn.execute(
            "UPDATE subscribers SET status = 'opted_out' WHERE id = ANY($1)", ids[:5]
        )
        phones = {
            r["phone"]
            for r in await conn.fetch("SELECT phone FROM subscribers WHERE id = ANY($1)", ids[5:])
        }
    await dispatch_until(db_url, pool, simulator, no_open(pool))
    assert {"+" + str(m["msisdn"]) for m in simulator.messages} == phones
    assert len(simulator.messages) == 15
    cancelled = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'cancelled'")
    assert cancelled == 5


@pytest.mark.parametrize("simulator", [{"garbled_ratio": 1.0}], indirect=True)
async def test_failing_gateway_is_retried_a_bounded_number_of_times(
    db_url: str, pool: asyncpg.Pool, simulator: GatewaySimulator
) -> None:
    """A gateway that takes every batch and loses every answer: each try may have sent the SMS,
    so each counts, and the message fails after max_attempts (at most that many copies)."""
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(10)])
        await queue_alert(conn, DONUT)
    await dispatch_until(
        db_url, pool, simulator, no_open(pool), max_attempts=3, retry_base_seconds=0.05
    )
    rows = await pool.fetch("SELECT status, attempts, error FROM deliveries")
    assert len(rows) == 10
    assert {(r["status"], r["attempts"]) for r in rows} == {("failed", 3)}
    assert all("unreadable 2xx answer" in r["error"] for r in rows)
    copies = Counter(m["msisdn"] for m in simulator.messages)
    assert set(copies.values()) == {3}


@pytest.mark.parametrize("simulator", [{"failure_ratio": 1.0}], indirect=True)
async def test_a_gateway_answering_500_costs_no_attempt(
    db_url: str, pool: asyncpg.Pool, simulator: GatewaySimulator
) -> None:
    """A 500 took nothing: the messages keep their attempts and wait for the gateway (the
    circuit breaker sends a probe per breaker_open_seconds meanwhile), so an outage longer
    than the retries last fails nobody (tests/test_gateway_storms.py)."""
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(10)])
        await queue_alert(conn, DONUT)
    started = time.monotonic()

    async def tried_for_a_second() -> bool:
        return time.monotonic() - started > 1.5

    await dispatch_until(
        db_url,
        pool,
        simulator,
        tried_for_a_second,
        max_attempts=1,
        retry_base_seconds=0.05,
        breaker_open_seconds=0.2,
    )
    rows = await pool.fetch("SELECT status, attempts, error FROM deliveries")
    assert len(rows) == 10
    assert {(r["status"], r["attempts"]) for r in rows} == {("queued", 0)}
    assert all("500" in r["error"] for r in rows)
    # The sender loops' first batches, then a probe per 0.2 s: no tight retry loop.
    assert 3 <= simulator.stats.requests <= 5 + 1.5 / 0.2 + 2, simulator.stats


class ThrottlingGateway:
    """A GatewayAPI stand-in that answers 429 (Retry-After) to its first requests, then 200."""

    def __init__(self, throttle: int, retry_after: float) -> None:
        self.throttle, self.retry_after = throttle, retry_after
        self.times: list[float] = []
        self.accepted: list[int] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/rest/mtsms", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.times.append(time.monotonic())
        if len(self.times) <= self.throttle:
            return web.json_response(
                {"code": "0x0429"}, status=429, headers={"Retry-After": str(self.retry_after)}
            )
        self.accepted += [r["msisdn"] for r in body["recipients"]]
        return web.json_response({"ids": [len(self.times)]})


async def test_throttling_waits_for_retry_after_and_costs_no_attempt(
    db_url: str, pool: asyncpg.Pool
) -> None:
    gateway = ThrottlingGateway(throttle=2, retry_after=0.3)
    await gateway.start()
    try:
        async with pool.acquire() as conn:
            await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(10)])
            await queue_alert(conn, DONUT)
        await dispatch_until(db_url, pool, gateway, no_open(pool), max_attempts=1)  # type: ignore[arg-type]
    finally:
        await gateway.close()
    rows = await pool.fetch("SELECT status, attempts FROM deliveries")
    # With max_attempts=1 a counted throttle would have failed every delivery.
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert len(gateway.accepted) == 10
    gaps = [b - a for a, b in zip(gateway.times, gateway.times[1:], strict=False)]
    assert all(gap >= 0.3 - 0.02 for gap in gaps[:2]), gaps


async def test_alert_priority_and_expiry_reach_the_gateway(
    db_url: str, pool: asyncpg.Pool, simulator: GatewaySimulator
) -> None:
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(3)])
        alert = await queue_alert(conn, DONUT, "emergency")
        await conn.execute(
            "UPDATE alerts SET expires_at = now() + interval '1 hour' WHERE id = $1", alert
        )
    await dispatch_until(db_url, pool, simulator, no_open(pool))
    assert len(simulator.messages) == 3
    for m in simulator.messages:
        assert m["priority"] == "VERY_URGENT"
        assert 3500 <= m["validity_period"] <= 3600
        assert m["encoding"] == "UTF8"


def test_retry_delay_grows_exponentially_with_bounded_jitter() -> None:
    from broadcaster.dispatch.dispatcher import MAX_BACKOFF_SECONDS, retry_delay

    for attempt in range(1, 8):
        floor = 2.0 * 2 ** (attempt - 1)
        delays = [retry_delay(attempt, 2.0) for _ in range(50)]
        assert all(floor <= d <= floor + 2.0 for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jittered
    assert retry_delay(30, 2.0) == MAX_BACKOFF_SECONDS
