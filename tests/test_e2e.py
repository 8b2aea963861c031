"""End to end over real processes: the service (or API + dispatchers) and the GatewayAPI simulator
as child processes on free ports, a real PostgreSQL, real HTTP both ways. Children are stopped by
PID in teardown."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from shapely.geometry import Point, shape
from tests.stack import Stack

from broadcaster.auth import create_api_key
from broadcaster.ingest.geo import haversine_m
from broadcaster.seed import insert_subscribers, synthetic_subscribers

FINAL = ("delivered", "failed", "expired", "cancelled")
# North of a slanted line through Hillerød: about half of the district.
NORTH = {
    "type": "Polygon",
    "coordinates": [[[11.8, 55.80], [12.7, 55.95], [12.7, 56.2], [11.8, 56.2], [11.8, 55.80]]],
}


@pytest.fixture
async def seeded(pool: asyncpg.Pool) -> AsyncIterator[tuple[list[tuple], list[tuple], str]]:
    subs, locs = synthetic_subscribers(5000, seed=11)
    async with pool.acquire() as conn:
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "e2e")
    yield subs, locs, key


def expected_phones(subs: list[tuple], locs: list[tuple], inside: Any) -> set[str]:
    active = {sid: phone for sid, phone, _, status in subs if status == "active"}
    return {active[sid] for sid, _, lon, lat in locs if sid in active and inside(lon, lat)}


async def wait_final(
    http: httpx.AsyncClient, alert_id: int, key: str, timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = (
            await http.get(f"/v1/alerts/{alert_id}", headers={"Authorization": f"Bearer {key}"})
        ).json()
        counts = status["deliveries"]
        if (
            status["recipients"] is not None
            and sum(counts[s] for s in FINAL) == status["recipients"]
        ):
            return status
        assert time.monotonic() < deadline, f"alert not final in {timeout} s: {status}"
        await asyncio.sleep(0.2)


async def simulator_messages(sim_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        return list((await sim.get("/_sim/messages")).json())


async def post_alert(http: httpx.AsyncClient, key: str, area: dict, **extra: Any) -> int:
    r = await http.post(
        "/v1/alerts",
        headers={"Authorization": f"Bearer {key}"},
        json={"message": "Politiet efterlyser vidner", "area": area, **extra},
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


async def test_broadcast_reaches_exactly_the_subscribers_inside_the_polygon(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    subs, locs, key = seeded
    stack.start_simulator("--receipt-delay-ms", "50", "--delivered-ratio", "0.9")
    stack.write_config(rate=20_000, max_batch=500)
    stack.start_service()
    north = shape(NORTH)
    expected = expected_phones(subs, locs, lambda lon, lat: north.covers(Point(lon, lat)))
    assert 1000 < len(expected) < 4000

    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post_alert(http, key, NORTH)
        status = await wait_final(http, alert_id, key)
    received = Counter("+" + str(m["msisdn"]) for m in await simulator_messages(stack.sim_url))
    assert set(received) == expected  # nobody missed, nobody outside the zone
    assert max(received.values()) == 1  # nobody twice
    assert status["status"] == "completed"
    assert status["recipients"] == len(expected)
    counts = status["deliveries"]
    assert counts["delivered"] + counts["failed"] == len(expected)
    assert 0.8 < counts["delivered"] / len(expected) < 0.97  # the simulator's 90 %
    # Every receipt is kept for audit and was matched to its delivery.
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts WHERE applied") == len(
        expected
    )


async def test_dispatcher_killed_mid_broadcast_another_finishes_the_job(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    subs, locs, key = seeded
    center, radius = (12.3111, 55.9267), 15_000.0
    stack.start_simulator("--latency-ms", "50", "--receipt-delay-ms", "50")
    stack.write_config(rate=600, max_batch=100, concurrency=2)
    stack.start_service("api")
    victim = stack.start_dispatcher("dispatcher-a")
    stack.start_dispatcher("dispatcher-b")
    expected = expected_phones(
        subs, locs, lambda lon, lat: haversine_m(lon, lat, *center) <= radius
    )
    assert len(expected) > 1500

    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post_alert(
            http, key, {"type": "Circle", "center": list(center), "radius_m": radius}
        )
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            while (await sim.get("/_sim/stats")).json()["recipients"] < 400:
                await asyncio.sleep(0.05)
        # Kill it while it holds claimed rows (its transaction is open while it waits on the
        # rate limit or the gateway), so the other dispatcher must take those rows over.
        held = 0
        for _ in range(500):
            held = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND application_name LIKE $1",
                f"dispatcher %-{victim.pid}-%",
            )
            if held:
                break
            await asyncio.sleep(0.005)
        victim.kill()  # SIGKILL: no chance to release its rows
        assert held > 0
        status = await wait_final(http, alert_id, key)
    received = Counter("+" + str(m["msisdn"]) for m in await simulator_messages(stack.sim_url))
    assert set(received) == expected  # nobody missed, nobody outside
    # Only what the killed worker had in flight can have gone out twice.
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= 2 * 100
    assert status["status"] == "completed"
    assert (
        await pool.fetchval("SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')")
        == 0
    )


async def test_sigterm_stops_claiming_and_leaves_nothing_in_flight(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    subs, locs, key = seeded
    stack.start_simulator("--latency-ms", "100")
    stack.write_config(rate=300, max_batch=50, concurrency=2)
    stack.start_service("api")
    dispatcher = stack.start_dispatcher("dispatcher")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post_alert(http, key, NORTH)
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            while (await sim.get("/_sim/stats")).json()["recipients"] < 200:
                await asyncio.sleep(0.05)
    started = time.monotonic()
    assert dispatcher.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    in_flight = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sending'")
    assert in_flight == 0
    sent = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE status IN ('sent', 'delivered', 'failed')"
    )
    received = len(await simulator_messages(stack.sim_url))
    assert sent == received  # everything the gateway took was recorded before exit
    left = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND status = 'queued'", alert_id
    )
    assert left > 0  # it stopped mid-broadcast, the rest waits for another dispatcher
    # Another dispatcher (a new pod) completes the broadcast: nobody missed, nobody twice.
    stack.start_dispatcher("dispatcher-b")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        status = await wait_final(http, alert_id, key)
    north = shape(NORTH)
    expected = expected_phones(subs, locs, lambda lon, lat: north.covers(Point(lon, lat)))
    received = Counter("+" + str(m["msisdn"]) for m in await simulator_messages(stack.sim_url))
    assert set(received) == expected
    assert max(received.values()) == 1
    assert status["status"] == "completed"


async def test_twilio_broadcast_with_throttling_and_invalid_numbers(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    subs, locs, key = seeded
    center, radius = (12.3111, 55.9267), 6_000.0
    stack.start_simulator(
        "--receipt-delay-ms",
        "50",
        "--throttle-ratio",
        "0.05",
        "--invalid-ratio",
        "0.02",
        protocol="twilio",
    )
    stack.write_config(rate=5_000, max_batch=50, concurrency=8, kind="twilio")
    stack.start_service()
    expected = expected_phones(
        subs, locs, lambda lon, lat: haversine_m(lon, lat, *center) <= radius
    )
    assert 200 < len(expected) < 1500

    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post_alert(
            http, key, {"type": "Circle", "center": list(center), "radius_m": radius}
        )
        status = await wait_final(http, alert_id, key)
    async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
        accepted = Counter(m["to"] for m in (await sim.get("/_sim/messages")).json())
        stats = (await sim.get("/_sim/stats")).json()
    counts = status["deliveries"]
    rejected = await pool.fetchval(
        "SELECT array_agg(s.phone) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE d.error LIKE 'twilio 21211%' AND d.status = 'failed'"
    )
    assert stats["throttled_requests"] > 0  # throttled messages were submitted again
    assert rejected  # permanent rejections end as failed, with the provider's reason
    assert max(accepted.values()) == 1  # nobody twice
    assert set(accepted) | set(rejected) == expected  # nobody missed
    assert counts["delivered"] == len(accepted)
    assert counts["failed"] == len(rejected)
    assert status["recipients"] == len(expected)


async def test_duplicate_and_out_of_order_receipts_change_nothing_twice(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    subs, locs, key = seeded
    center, radius = (12.3111, 55.9267), 5_000.0
    stack.start_simulator(
        "--receipt-delay-ms",
        "0",
        "--delivered-ratio",
        "0.8",
        "--receipt-copies",
        "3",
        "--shuffle-receipts",
        "--enroute-after-final",
    )
    stack.write_config(rate=20_000, max_batch=200)
    stack.start_service()
    expected = expected_phones(
        subs, locs, lambda lon, lat: haversine_m(lon, lat, *center) <= radius
    )
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post_alert(
            http, key, {"type": "Circle", "center": list(center), "radius_m": radius}
        )
        status = await wait_final(http, alert_id, key)
        # Let the late duplicates and ENROUTEs arrive, then check nothing moved.
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            deadline = time.monotonic() + 30
            while (await sim.get("/_sim/stats")).json()["receipts_pending"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            stats = (await sim.get("/_sim/stats")).json()
        later = (
            await http.get(f"/v1/alerts/{alert_id}", headers={"Authorization": f"Bearer {key}"})
        ).json()
    # final and ENROUTE, each three times, in a random order per recipient
    assert stats["receipts_sent"] == 6 * len(expected)
    assert later["deliveries"] == status["deliveries"]
    counts = later["deliveries"]
    assert counts["delivered"] + counts["failed"] == len(expected)
    assert 0.7 < counts["delivered"] / len(expected) < 0.9
    stored = await pool.fetchval("SELECT count(*) FROM delivery_receipts")
    assert stored == 6 * len(expected)  # every receipt kept for audit


async def test_answers_without_ids_are_sent_again_and_nobody_is_missed(
    stack: Stack, seeded: tuple, pool: asyncpg.Pool
) -> None:
    """A 2xx answer the adapter cannot read (a proxy's HTML page, JSON without ids): the gateway
    may have taken the batch, so it is sent again (at least once); nobody is missed, and only
    those batches can reach a number twice."""
    subs, locs, key = seeded
    center, radius = (12.3111, 55.9267), 8_000.0
    max_batch = 50
    stack.start_simulator("--garbled-ratio", "0.2", "--receipt-delay-ms", "20")
    stack.write_config(rate=20_000, max_batch=max_batch)
    # Retries a tenth as far apart as by default: the same path, in a second of waiting.
    stack.start_service(BROADCASTER_RETRY_BASE_SECONDS="0.2")
    expected = expected_phones(
        subs, locs, lambda lon, lat: haversine_m(lon, lat, *center) <= radius
    )
    assert len(expected) > 500
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post_alert(
            http, key, {"type": "Circle", "center": list(center), "radius_m": radius}
        )
        status = await wait_final(http, alert_id, key)
        async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
            stats = (await sim.get("/_sim/stats")).json()
    received = Counter("+" + str(m["msisdn"]) for m in await simulator_messages(stack.sim_url))
    assert set(received) == expected  # nobody missed
    duplicates = sum(n - 1 for n in received.values())
    assert stats["garbled_answers"] > 0
    assert 0 < duplicates <= stats["garbled_answers"] * max_batch
    assert status["status"] == "completed"
    counts = status["deliveries"]
    assert counts["delivered"] + counts["failed"] == len(expected)
