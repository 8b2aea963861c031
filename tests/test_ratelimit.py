"""The token bucket never lets more than rate x time + burst through."""

from __future__ import annotations

import asyncio
import time

from broadcaster.ratelimit import TokenBucket


async def test_bucket_never_exceeds_rate_plus_burst() -> None:
    bucket = TokenBucket(rate=2000, burst=100)
    started = time.monotonic()
    taken = 0
    for _ in range(10):
        await bucket.acquire(50)
        taken += 50
    elapsed = time.monotonic() - started
    # 500 tokens at 2000/s with 100 up front need at least (500 - 100) / 2000 s.
    assert elapsed >= (taken - 100) / 2000 - 0.005


async def test_concurrent_acquirers_share_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=50)
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire(50) for _ in range(6)))
    assert time.monotonic() - started >= (300 - 50) / 1000 - 0.005


async def test_a_batch_larger_than_the_burst_waits_for_its_deficit() -> None:
    bucket = TokenBucket(rate=1000, burst=100)
    await bucket.acquire(300)  # goes at once, leaves a debt of 200 tokens
    started = time.monotonic()
    await bucket.acquire(10)
    assert time.monotonic() - started >= 0.2 - 0.005
