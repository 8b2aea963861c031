"""Gateway storms with one gateway and nowhere to fail over to (the common small deployment):
429 with Retry-After, 5xx pages, slow answers beyond the timeout, connection resets and
unreadable answers, for seconds in the middle of a broadcast. In-process dispatcher, a real
PostgreSQL, the GatewayAPI simulator on a free port whose faults the test switches on and off.

What each storm must leave: nobody missed; a number twice only where the gateway took a batch
whose answer was lost (reset after taking it, an answer past the timeout, an unreadable 200),
at most a batch per such answer; the requests during a 429 or 5xx storm bounded (no tight retry
loop); no one-second window above the account's rate once the storm ends; an alert whose expiry
passed during the storm not sent after it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from tests.test_failover import FANNED, OPEN, SECRET, Running, gateway, wait_for
from tests.test_fanout import queue_alert

from broadcaster.settings import load_settings
from gateway_simulators.gatewayapi import GatewaySimulator, SimulatorOptions, busiest_window

RATE = 200.0
MAX_BATCH = 20
RECIPIENTS = 800
EXPIRING = 60
STORM_SECONDS = 3.0
TIMEOUT_SECONDS = 0.5
RETRY_AFTER = 1.0
# A band of the map for the broadcast, and a small circle elsewhere for the expiring alert.
BAND = {
    "type": "Polygon",
    "coordinates": [[[12.0, 55.0], [12.4, 55.0], [12.4, 55.1], [12.0, 55.1], [12.0, 55.0]]],
}
SPOT = {"type": "Circle", "center": [12.05, 55.35], "radius_m": 200}


@dataclass(frozen=True)
class Storm:
    faults: dict[str, Any]
    # The answers of the storm that were lost after the gateway took the batch (simulator stats).
    lost: tuple[str, ...] = ()
    # Most requests the gateway may see during the storm (None: the storm lets most through).
    max_requests: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# Sender loops: one per batch in flight (the gateway's concurrency, 2) and the emergency loop.
LOOPS = 3
STORMS = {
    # Each Retry-After period, at most each loop's batch in flight meets the 429 again.
    "429 storm": Storm(
        {"throttle_ratio": 1.0, "throttle_retry_after": RETRY_AFTER},
        max_requests=LOOPS * (int(STORM_SECONDS / RETRY_AFTER) + 1),
    ),
    # Three failures open the circuit for 2 s, then one probe per 2 s.
    "503 storm": Storm(
        {"failure_ratio": 1.0, "failure_status": 503},
        max_requests=LOOPS + 3 + int(STORM_SECONDS / 2.0) + 1,
    ),
    "500 storm": Storm(
        {"failure_ratio": 1.0}, max_requests=LOOPS + 3 + int(STORM_SECONDS / 2.0) + 1
    ),
    "20 % slow beyond the timeout": Storm(
        {"slow_ratio": 0.2, "slow_ms": 2000}, lost=("slow_answers",)
    ),
    "20 % connection resets": Storm(
        {"reset_ratio": 0.1, "lost_answer_ratio": 0.1}, lost=("lost_answers",)
    ),
    "20 % unreadable answers": Storm({"garbled_ratio": 0.2}, lost=("garbled_answers",)),
}


async def add_people(conn: asyncpg.Connection, prefix: str, count: int, lat: float) -> None:
    await conn.execute(
        "WITH s AS (INSERT INTO subscribers (phone) SELECT $1 || lpad(g::text, 6, '0') "
        "FROM generate_series(1, $2::int) g RETURNING id) "
        "INSERT INTO subscriber_locations (subscriber_id, position) "
        "SELECT id, point((12.05 + (random() - 0.5) * 1e-3) * 1e6, $3 * 1e6) FROM s",
        prefix,
        count,
        lat,
    )


@pytest.mark.parametrize("storm", STORMS.values(), ids=STORMS.keys())
async def test_one_gateway_rides_out_a_storm(db_url: str, pool: asyncpg.Pool, storm: Storm) -> None:
    sim = GatewaySimulator(SimulatorOptions(token="t", webhook_secret=SECRET, hold_receipts=True))
    port = await sim.start()
    primary = gateway("primary", port, rate=RATE, max_batch=MAX_BATCH)
    settings = load_settings(
        database_url=db_url,
        poll_interval=0.05,
        gateways=[primary.model_copy(update={"timeout_seconds": TIMEOUT_SECONDS})],
    )
    async with pool.acquire() as conn:
        await add_people(conn, "+4531", RECIPIENTS, 55.05)
        await add_people(conn, "+4532", EXPIRING, 55.35)
        alert = await queue_alert(conn, BAND)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FANNED, alert)
        while len(sim.messages) < RECIPIENTS // 4:
            await asyncio.sleep(0.01)
        requests_before = sim.stats.requests
        for name, value in storm.faults.items():
            setattr(sim.options, name, value)
        started = time.monotonic()
        # An emergency whose expiry passes a second into the storm.
        async with pool.acquire() as conn:
            expiring = await queue_alert(conn, SPOT, "emergency")
            expires_at = await conn.fetchval(
                "UPDATE alerts SET expires_at = now() + interval '1 second' WHERE id = $1 "
                "RETURNING expires_at",
                expiring,
            )
        await asyncio.sleep(STORM_SECONDS - (time.monotonic() - started))
        storm_requests = sim.stats.requests - requests_before
        for name in storm.faults:
            setattr(sim.options, name, getattr(SimulatorOptions(), name))
        ended = time.time()
        await wait_for(pool, OPEN, alert, timeout=60)
        await wait_for(pool, OPEN, expiring, timeout=10)
    finally:
        await running.close()
        await sim.close()

    phones = {r["phone"] for r in await pool.fetch("SELECT phone FROM subscribers")}
    received = Counter("+" + str(m["msisdn"]) for m in sim.messages)
    broadcast = Counter("+" + str(m["msisdn"]) for m in sim.messages if m["userref"] == str(alert))
    assert set(broadcast) == {p for p in phones if p.startswith("+4531")}  # nobody missed
    statuses = dict(
        await pool.fetch(
            "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY status", alert
        )
    )
    assert statuses == {"sent": RECIPIENTS}
    lost_answers = sum(getattr(sim.stats, name) for name in storm.lost)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= lost_answers * MAX_BATCH  # only where an answer was lost
    if storm.max_requests is not None:
        assert storm_requests <= storm.max_requests  # no tight retry loop
    # Once the storm is over the account's rate holds in every one-second window.
    after = [(t, n) for t, n, _ in sim.timeline if t > ended]
    assert after, "nothing was sent after the storm"
    assert busiest_window(after) <= RATE * 1.1
    # Nothing of the expiring alert went out after its expiry.
    late = [t for t, _, ref in sim.timeline if ref == str(expiring) and t > expires_at.timestamp()]
    assert late == []
    counts = dict(
        await pool.fetch(
            "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY status",
            expiring,
        )
    )
    assert set(counts) <= {"sent", "expired"} and sum(counts.values()) == EXPIRING
    print(
        f"\nstorm {storm.faults}: {storm_requests} requests during {STORM_SECONDS:g} s, "
        f"lost answers {lost_answers}, duplicates {duplicates} (bound {lost_answers * MAX_BATCH}),"
        f" busiest second after {busiest_window(after)} (limit {RATE:g}), expiring alert "
        f"{counts}, stats {vars(sim.stats)}"
    )
