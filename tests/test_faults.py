"""Dispatchers killed with SIGKILL at random moments, three times in a row, during a 50,000-
recipient broadcast with a second dispatcher running: afterwards everyone in the zone has an
accepted submission at the gateway (nobody missed), and numbers reached twice come only from
batches in flight at a kill (at most batches in flight x batch size per kill). The guarantee
is at-least-once with that bound (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import asyncpg
import httpx
import pytest
from tests.stack import Stack
from tests.test_e2e import post_alert, simulator_messages
from tests.test_failover import OPEN, wait_for

from broadcaster.auth import create_api_key
from broadcaster.seed import insert_subscribers, synthetic_subscribers

MAX_BATCH = 250
CONCURRENCY = 4
KILLS = 3
# Around the whole district: every active subscriber is in the zone.
DISTRICT = {
    "type": "Polygon",
    "coordinates": [[[11.5, 55.5], [13.0, 55.5], [13.0, 56.3], [11.5, 56.3], [11.5, 55.5]]],
}

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


async def test_three_sigkills_at_random_moments_during_a_50000_broadcast(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    seed = int(os.environ.get("BROADCASTER_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    subs, locs = synthetic_subscribers(52_000, seed=5)
    async with pool.acquire() as conn:
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "faults")
    expected = {phone for _, phone, _, status in subs if status == "active"}
    assert len(expected) >= 50_000

    # Receipts are held: the test is about submissions, and 50,000 receipts would only cost time.
    stack.start_simulator("--latency-ms", "20", "--hold-receipts")
    stack.write_config(rate=12_000, max_batch=MAX_BATCH, concurrency=CONCURRENCY)
    stack.start_service("api")
    victim = stack.start_dispatcher("dispatcher-0")
    stack.start_dispatcher("steady")

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
        alert_id = await post_alert(http, key, DISTRICT)
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            for n in range(1, KILLS + 1):
                # A random moment while the broadcast runs: after a random share of it went out.
                mark = rng.uniform(0.05, 0.25) * n * len(expected)
                while (await sim.get("/_sim/stats")).json()["recipients"] < mark:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0, 0.2))
                victim.kill()
                victim = stack.start_dispatcher(f"dispatcher-{n}")
        await wait_for(pool, OPEN, alert_id, timeout=240)

    received = Counter("+" + str(m["msisdn"]) for m in await simulator_messages(stack.sim_url))
    missed = expected - set(received)
    assert not missed, f"{len(missed)} missed (seed {seed})"
    assert set(received) == expected  # nobody outside the zone either
    duplicates = sum(n - 1 for n in received.values())
    bound = KILLS * CONCURRENCY * MAX_BATCH
    assert duplicates <= bound, f"{duplicates} duplicates > {bound} (seed {seed})"
    counts = await pool.fetch(
        "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY 1", alert_id
    )
    assert dict(counts) == {"sent": len(expected)}  # each delivery once, all submitted
    print(f"seed {seed}: {len(expected)} recipients, {KILLS} kills, {duplicates} duplicates")
