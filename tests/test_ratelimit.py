"""The shared token bucket in PostgreSQL: whoever takes, never more than rate x time + burst."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from broadcaster.dispatch.ratelimit import SharedBucket, default_burst


def test_default_burst_is_a_twentieth_of_a_second_and_at_least_one() -> None:
    assert default_burst(300) == pytest.approx(15)
    assert default_burst(5) == 1
    assert SharedBucket("g", 300).burst == pytest.approx(15)
    assert SharedBucket("g", 300, burst=100).burst == 100


def test_below_200_per_second_the_default_burst_is_up_to_a_tenth_of_a_second() -> None:
    """Batches of one or two messages made a 50/s broadcast's rate depend on how quickly each
    batch came back (tests/test_gateway_storms.py); a tenth of a second's worth, at most a
    batch and at most 10 messages, keeps the window within the limit + 10 %."""
    assert default_burst(50, max_batch=1000) == pytest.approx(5)  # 0.1 s worth
    assert default_burst(100, max_batch=1000) == pytest.approx(10)
    assert default_burst(150, max_batch=1000) == pytest.approx(10)  # 10 messages at most
    assert default_burst(100, max_batch=4) == pytest.approx(5)  # never below 0.05 s worth
    assert default_burst(400, max_batch=10) == pytest.approx(20)  # from 200/s: unchanged
    assert default_burst(5, max_batch=1000) == 1
    for rate in (1, 5, 20, 50, 99, 150, 199, 200, 300):
        assert default_burst(rate, max_batch=1000) <= max(1.0, rate * 0.1)
    assert SharedBucket("g", 50, max_batch=10).burst == pytest.approx(5)
    # A bulk taker waits for half the burst at most, so lateness does not spill tokens.
    assert SharedBucket("g", 500).chunk(100) == pytest.approx(12.5)
    assert SharedBucket("g", 500, burst=1000).chunk(100) == pytest.approx(50)  # 0.1 s worth
    assert SharedBucket("g", 500, burst=1000).chunk(10) == 10
    assert SharedBucket("g", 5).chunk(100) == 1


async def test_takers_on_separate_connections_share_one_limit(pool: asyncpg.Pool) -> None:
    """Three takers (three dispatchers, each with its own bucket object and connection) take
    as fast as they can for a second: together they get the rate plus one burst, no more."""
    rate = 1000.0
    buckets = [SharedBucket("primary", rate) for _ in range(3)]
    await buckets[0].ensure(pool)
    taken: list[int] = []

    async def taker(bucket: SharedBucket) -> None:
        async with pool.acquire() as conn:
            while time.monotonic() < stop:
                taken.append(await bucket.take(conn, 20))

    stop = time.monotonic() + 1.0
    started = time.monotonic()
    await asyncio.gather(*(taker(b) for b in buckets))
    elapsed = time.monotonic() - started
    burst = buckets[0].burst
    assert sum(taken) <= burst + rate * elapsed  # the bucket started empty, so not even this
    assert sum(taken) >= rate * (elapsed - 0.1) - 20 * 3  # and nobody starved it
    assert max(taken) <= burst


async def test_urgent_takes_one_token_without_waiting_for_a_chunk(pool: asyncpg.Pool) -> None:
    bucket = SharedBucket("primary", 100.0, burst=50)  # a bulk chunk: 10 tokens
    await bucket.ensure(pool)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE rate_buckets SET tokens = 2, refilled_at = clock_timestamp()")
        started = time.monotonic()
        # The two tokens, and any refilled since the UPDATE (one per 10 ms on a loaded
        # machine): what is there, not a chunk waited for.
        assert 2 <= await bucket.take(conn, 1000, urgent=True) < 10
        assert time.monotonic() - started < 0.05
        started = time.monotonic()
        assert await bucket.take(conn, 1000) >= 10  # waits for a chunk: 0.1 s at 100/s
        assert time.monotonic() - started >= 0.09


async def test_given_back_tokens_are_there_for_the_next_taker(pool: asyncpg.Pool) -> None:
    bucket = SharedBucket("primary", 10.0, burst=100)
    await bucket.ensure(pool)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE rate_buckets SET tokens = 0, refilled_at = clock_timestamp()")
        await bucket.give_back(conn, 40)
        assert await bucket.take(conn, 1000, urgent=True) == 40
        await bucket.give_back(conn, 500)  # never above the burst
        assert await bucket.take(conn, 1000, urgent=True) == 100


async def test_a_slowed_bucket_refills_slower(pool: asyncpg.Pool) -> None:
    bucket = SharedBucket("primary", 1000.0, burst=1000)
    await bucket.ensure(pool)
    bucket.set_speed(0.1)
    async with pool.acquire() as conn:
        started = time.monotonic()
        await conn.execute("UPDATE rate_buckets SET tokens = 0, refilled_at = clock_timestamp()")
        await asyncio.sleep(0.5)
        got = await bucket.take(conn, 10_000, urgent=True)
        elapsed = time.monotonic() - started  # 0.5 s, and more on a loaded machine
    assert elapsed < 1.5
    assert 40 <= got <= 100 * elapsed + 1  # at 100/s, not at 1000/s


async def test_a_missing_row_is_created_empty(pool: asyncpg.Pool) -> None:
    bucket = SharedBucket("new-gateway", 1000.0)
    async with pool.acquire() as conn:
        assert await bucket.try_take(conn, 10, 1) == (0, pytest.approx(0.001))
        assert (
            await conn.fetchval("SELECT tokens FROM rate_buckets WHERE gateway = $1", "new-gateway")
            == 0
        )
