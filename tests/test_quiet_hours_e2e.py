"""Quiet hours and send_at over real processes (API, dispatcher and the GatewayAPI simulator,
the `stack` fixture), on an injected clock: BROADCASTER_CLOCK_OFFSET_SECONDS puts the service a
few seconds before 07:00 (or 22:00) in Copenhagen, so the morning comes in seconds, not hours."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from tests.stack import Stack
from tests.test_e2e import simulator_messages

from broadcaster.auth import create_api_key
from broadcaster.seed import insert_subscribers, synthetic_subscribers

CPH = ZoneInfo("Europe/Copenhagen")
EVERYONE = {"type": "Circle", "center": [12.3111, 55.9267], "radius_m": 100_000}


def clock_before(hour: int, seconds_ahead: float) -> tuple[float, datetime, float]:
    """(offset for BROADCASTER_CLOCK_OFFSET_SECONDS, that hour as the service will see it,
    the system's time.time() when it comes): the next `hour`:00 in Copenhagen arrives
    `seconds_ahead` seconds from now on the service's clock."""
    now = datetime.now(UTC)
    target = now.astimezone(CPH).replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    offset = (target - now).total_seconds() - seconds_ahead
    return offset, target, time.time() + seconds_ahead


async def texts_sent(stack: Stack) -> Counter[str]:
    return Counter(m["message"] for m in await simulator_messages(stack.sim_url))


async def status_of(http: httpx.AsyncClient, key: str, alert_id: int) -> dict[str, Any]:
    r = await http.get(f"/v1/alerts/{alert_id}", headers={"Authorization": f"Bearer {key}"})
    return dict(r.json())


async def post(http: httpx.AsyncClient, key: str, message: str, **extra: Any) -> int:
    r = await http.post(
        "/v1/alerts",
        headers={"Authorization": f"Bearer {key}"},
        json={"message": message, "area": EVERYONE, **extra},
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.2)


async def test_night_waits_for_morning_emergencies_do_not_expiring_alerts_never_go(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    subs, locs = synthetic_subscribers(120, seed=5)
    async with pool.acquire() as conn:
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "quiet")
    active = sum(1 for s in subs if s[3] == "active")
    offset, morning, morning_at = clock_before(7, seconds_ahead=15)
    stack.start_simulator()
    stack.write_config(rate=5000)
    stack.start_service(
        BROADCASTER_QUIET_HOURS_START="22:00",
        BROADCASTER_QUIET_HOURS_END="07:00",
        BROADCASTER_CLOCK_OFFSET_SECONDS=str(offset),
    )
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        normal = await post(http, key, "normal at night")
        await post(http, key, "emergency at night", priority="emergency")
        expiring = await post(
            http, key, "expires at dawn", expires_at=(morning - timedelta(seconds=8)).isoformat()
        )
        later = await post(
            http, key, "at 07:00:06", send_at=(morning + timedelta(seconds=6)).isoformat()
        )
        assert time.time() < morning_at - 9, "the service took too long to start for this test"
        for alert_id in (normal, later):
            status = await status_of(http, key, alert_id)
            assert status["status"] == "scheduled", status
        assert datetime.fromisoformat((await status_of(http, key, normal))["not_before"]) == morning

        # The emergency goes at once, in the quiet hours.
        async def emergency_sent() -> bool:
            return (await texts_sent(stack))["emergency at night"] == active

        await wait_for(emergency_sent, 15, "the emergency")

        # Just before the morning: nothing else has gone, and the expiring alert has expired.
        await asyncio.sleep(max(0.0, morning_at - 1.5 - time.time()))
        sent = await texts_sent(stack)
        assert set(sent) == {"emergency at night"}, sent
        assert (await status_of(http, key, expiring))["status"] == "expired"

        # The morning: the night's alert goes; the send_at alert waits for its six seconds.
        async def normal_sent() -> bool:
            return (await texts_sent(stack))["normal at night"] == active

        await wait_for(normal_sent, 15, "the night's alert in the morning")
        if time.time() < morning_at + 5:
            assert (await texts_sent(stack))["at 07:00:06"] == 0

        async def later_sent() -> bool:
            return (await texts_sent(stack))["at 07:00:06"] == active

        await wait_for(later_sent, 20, "the send_at alert")
        assert time.time() >= morning_at + 6 - 0.5  # not before its time (clock granularity)
        sent = await texts_sent(stack)
        assert sent["expires at dawn"] == 0
        status = await status_of(http, key, expiring)
        assert status["recipients"] == 0 and sum(status["deliveries"].values()) == 0


async def test_a_broadcast_running_into_the_quiet_hours_pauses(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    subs, locs = synthetic_subscribers(400, seed=6)
    async with pool.acquire() as conn:
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "quiet")
    offset, _, evening_at = clock_before(22, seconds_ahead=12)
    stack.start_simulator()
    stack.write_config(rate=10, max_batch=10)  # 400 messages: 40 s, through 22:00
    stack.start_service(
        BROADCASTER_QUIET_HOURS_START="22:00",
        BROADCASTER_QUIET_HOURS_END="07:00",
        BROADCASTER_CLOCK_OFFSET_SECONDS=str(offset),
    )
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        alert_id = await post(http, key, "evening")
        assert time.time() < evening_at - 5, "the service took too long to start for this test"
        await asyncio.sleep(max(0.0, evening_at + 1 - time.time()))
        paused = (await texts_sent(stack))["evening"]
        await asyncio.sleep(3)
        assert (await texts_sent(stack))["evening"] == paused  # nothing after 22:00
        status = await status_of(http, key, alert_id)
        assert 0 < paused < status["recipients"]
        assert status["status"] == "dispatching"
        assert status["deliveries"]["queued"] == status["recipients"] - paused
        # An emergency still goes (to one subscriber: the gateway takes 10 a second).
        sid = next(s[0] for s in subs if s[3] == "active")
        lon, lat = next((lon, lat) for s, _, lon, lat in locs if s == sid)
        r = await http.post(
            "/v1/alerts",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "message": "emergency",
                "priority": "emergency",
                "area": {"type": "Circle", "center": [lon, lat], "radius_m": 1},
            },
        )
        assert r.status_code == 202, r.text

        async def emergency_sent() -> bool:
            return (await texts_sent(stack))["emergency"] >= 1

        await wait_for(emergency_sent, 15, "the emergency in the quiet hours")
        assert (await texts_sent(stack))["evening"] == paused
