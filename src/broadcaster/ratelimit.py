"""A token bucket: at most `rate` messages per second on average, bursts up to `burst`.

The rate can change while running: a dispatcher's share of a gateway's limit changes when other
dispatchers join or leave (see roster.py).
"""

from __future__ import annotations

import asyncio
import time

# Batches are taken in chunks of at least this many seconds' worth of tokens, so a loop does not
# send a stream of one-message requests at low rates.
MIN_CHUNK_SECONDS = 0.1


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self._fixed_burst = burst
        # One second's worth by default: a full batch can go at once, the average still holds.
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate
        self.burst = self._fixed_burst if self._fixed_burst is not None else max(rate, 1.0)
        self._tokens = min(self._tokens, self.burst)

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

    async def take(self, most: int, *, urgent: bool = False) -> int:
        """Wait for a chunk of tokens and take up to `most` of them; returns how many.

        Taking tokens before claiming rows means the rows are claimed at the moment they can be
        sent, so an emergency alert queued meanwhile is claimed first, not behind a batch that
        sat waiting for the limiter. An `urgent` taker does not queue behind the others: it
        takes whatever whole tokens there are (the rate still holds; the others wait longer)."""
        if urgent:
            while True:
                self._refill()
                if self._tokens >= 1:
                    granted = int(min(most, self._tokens))
                    self._tokens -= granted
                    return granted
                await asyncio.sleep((1 - self._tokens) / self.rate)
        async with self._lock:
            self._refill()
            chunk = max(1.0, min(float(most), self.rate * MIN_CHUNK_SECONDS, self.burst))
            while self._tokens < chunk:
                await asyncio.sleep((chunk - self._tokens) / self.rate)
                self._refill()
            granted = int(min(most, self._tokens))
            self._tokens -= granted
            return granted

    def give_back(self, n: int) -> None:
        """Return tokens taken but not used (fewer rows were due than tokens granted)."""
        if n > 0:
            self._refill()
            self._tokens = min(self.burst, self._tokens + n)
