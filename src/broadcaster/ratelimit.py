"""A token bucket: at most `rate` messages per second on average, bursts up to `burst`."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        # One second's worth by default: a full batch can go at once, the average still holds.
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self, n: float) -> None:
        """Wait until n tokens are available and take them. n may exceed burst: the caller
        then waits for the deficit, so the long-run rate still holds."""
        async with self._lock:  # first come, first served
            self._refill()
            need = min(n, self.burst)
            while self._tokens < need:
                await asyncio.sleep((need - self._tokens) / self.rate)
                self._refill()
            self._tokens -= n
