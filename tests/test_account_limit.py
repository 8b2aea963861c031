"""The account's rate limit holds from the first second, for the sum of all dispatchers.

Dispatcher processes (`broadcaster dispatcher`) share one GatewayAPI gateway; the simulator, a
process of its own, stamps every request with the time it arrived and how many recipients it
carried (`/_sim/timeline`). Every one-second window, sliding over the arrivals, must hold at
most the limit + 10 %, and the rate over the whole broadcast must be the limit within 2 %:
with two dispatchers started together, and with three started together, a fourth added and
one killed (SIGKILL) mid-broadcast.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest
from tests.stack import Stack
from tests.test_fanout import queue_alert

from broadcaster import procs
from gateway_simulators.gatewayapi import Arrivals, arrivals, busiest_window, mean_rate

LIMIT = 400.0
RECIPIENTS = 6000
ZONE = {
    "type": "Polygon",
    "coordinates": [[[12.0, 55.0], [12.4, 55.0], [12.4, 55.4], [12.0, 55.4], [12.0, 55.0]]],
}


def test_window_arithmetic() -> None:
    timeline = [(0.0, 10), (0.5, 10), (0.99, 10), (1.0, 10), (1.2, 10), (2.5, 1)]
    assert busiest_window(timeline) == 40  # [0.5, 1.5) holds four requests
    assert mean_rate(timeline) == pytest.approx(41 / 2.5)


async def seed(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        await conn.execute(
            """WITH s AS (
                   INSERT INTO subscribers (phone)
                   SELECT '+4531' || lpad(g::text, 6, '0') FROM generate_series(1, $1) g
                   RETURNING id)
               INSERT INTO subscriber_locations (subscriber_id, position)
               SELECT id, point(12.2e6, 55.2e6) FROM s""",
            RECIPIENTS,
        )
        return await queue_alert(conn, ZONE)


async def timeline_of(sim_url: str) -> Arrivals:
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        return arrivals((await sim.get("/_sim/timeline")).json())


async def sent(pool: asyncpg.Pool, alert_id: int) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status = 'sent'", alert_id
        )
    )


def start_together(services: Stack, names: list[str]) -> list[procs.Child]:
    """Start dispatcher processes at the same moment (each waits for its own ready line)."""
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(services.start_dispatcher, names))


def check_limit(timeline: Arrivals) -> None:
    busiest = busiest_window(timeline)
    rate = mean_rate(timeline)
    print(f"busiest one-second window {busiest}, {rate:.1f}/s over the broadcast")
    assert busiest <= LIMIT * 1.10, f"{busiest} recipients in one second at a {LIMIT:.0f}/s limit"
    assert rate == pytest.approx(LIMIT, rel=0.02), f"{rate:.1f}/s over the broadcast"


async def wait_sent(pool: asyncpg.Pool, alert_id: int, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await sent(pool, alert_id) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} sent within {timeout} s"
        await asyncio.sleep(0.1)


async def test_two_dispatchers_started_together_hold_the_limit_from_the_first_second(
    stack: Stack,
    pool: asyncpg.Pool,
) -> None:
    stack.start_simulator("--hold-receipts")
    stack.write_config(rate=LIMIT, max_batch=10)
    alert_id = await seed(pool)  # queued before anyone runs: both race from their first moment
    start_together(stack, ["d1", "d2"])
    await wait_sent(pool, alert_id, RECIPIENTS, timeout=RECIPIENTS / LIMIT + 20)
    timeline = await timeline_of(stack.sim_url)
    assert sum(n for _, n in timeline) == RECIPIENTS  # nobody missed, nobody twice
    check_limit(timeline)


async def test_limit_holds_while_dispatchers_join_and_die(
    stack: Stack,
    pool: asyncpg.Pool,
) -> None:
    stack.start_simulator("--hold-receipts")
    stack.write_config(rate=LIMIT, max_batch=10)
    alert_id = await seed(pool)
    first, *_ = start_together(stack, ["d1", "d2", "d3"])
    await wait_sent(pool, alert_id, RECIPIENTS // 3, timeout=RECIPIENTS / LIMIT + 20)
    stack.start_dispatcher("d4")  # joins mid-broadcast
    await wait_sent(pool, alert_id, RECIPIENTS * 2 // 3, timeout=RECIPIENTS / LIMIT + 20)
    first.kill()  # SIGKILL: whatever it had in flight goes back to the queue
    await wait_sent(pool, alert_id, RECIPIENTS, timeout=RECIPIENTS / LIMIT + 20)
    timeline = await timeline_of(stack.sim_url)
    # At-least-once: a batch in flight at the kill may go twice, nobody is missed.
    # Its batches in flight: four bulk loops and the emergency loop, ten recipients each.
    assert RECIPIENTS <= sum(n for _, n in timeline) <= RECIPIENTS + 10 * 5
    check_limit(timeline)
