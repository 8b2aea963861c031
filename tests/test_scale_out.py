"""Scaled out as in production: two API processes and three dispatchers over one database. The
alert is created through one API, the gateway posts its receipts to the other, and while the
broadcast runs one more dispatcher starts and one is killed (SIGKILL). Nobody in the zone is
missed; only the batches the killed dispatcher had in flight can go out twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import httpx
from shapely.geometry import Point, shape
from tests.stack import Stack
from tests.test_e2e import NORTH, expected_phones, post_alert, simulator_messages, wait_final

from broadcaster import procs
from broadcaster.auth import create_api_key
from broadcaster.seed import insert_subscribers, synthetic_subscribers

MAX_BATCH = 100
CONCURRENCY = 2


async def test_two_apis_and_three_dispatchers_one_added_and_one_killed_mid_broadcast(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    subs, locs = synthetic_subscribers(8000, seed=23)
    async with pool.acquire() as conn:
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "scale-out")
    north = shape(NORTH)
    expected = expected_phones(subs, locs, lambda lon, lat: north.covers(Point(lon, lat)))
    assert len(expected) > 2500

    stack.start_simulator("--latency-ms", "30", "--receipt-delay-ms", "30")
    stack.write_config(rate=1500, max_batch=MAX_BATCH, concurrency=CONCURRENCY)
    # The receipts' API is the one BROADCASTER_PUBLIC_URL names (stack.api_url); the alert
    # goes in through a second API process.
    stack.start_service("api")
    second_url = f"http://127.0.0.1:{procs.free_port()}"
    second_port = second_url.rsplit(":", 1)[1]
    stack.children.append(
        procs.start(
            "api-2",
            procs.broadcaster_argv("api"),
            env=stack.env(BROADCASTER_PORT=second_port),
            log_dir=stack.log_dir,
            ready_url=f"{second_url}/readyz",
        )
    )
    dispatchers = [stack.start_dispatcher(f"dispatcher-{n}") for n in range(3)]

    async with httpx.AsyncClient(base_url=second_url, timeout=10) as http:
        alert_id = await post_alert(http, key, NORTH)
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            while (await sim.get("/_sim/stats")).json()["recipients"] < 600:
                await asyncio.sleep(0.05)
            stack.start_dispatcher("dispatcher-3")  # a pod added by a scale-up
            while (await sim.get("/_sim/stats")).json()["recipients"] < 1200:
                await asyncio.sleep(0.05)
        dispatchers[1].kill()  # a node lost: no chance to release its rows
        status = await wait_final(http, alert_id, key, timeout=120)

    received = Counter("+" + str(m["msisdn"]) for m in await simulator_messages(stack.sim_url))
    assert set(received) == expected  # nobody missed, nobody outside the zone
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= CONCURRENCY * MAX_BATCH  # only the killed dispatcher's batches in flight
    assert status["status"] == "completed"
    # Receipts reached the first API and were applied: every delivery ended.
    assert status["deliveries"]["delivered"] + status["deliveries"]["failed"] == len(expected)
    live = await pool.fetchval(
        "SELECT count(*) FROM dispatchers WHERE heartbeat_at > now() - interval '5 seconds'"
    )
    assert live >= 3  # the two survivors and the one added
