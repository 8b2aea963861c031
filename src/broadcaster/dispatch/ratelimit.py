"""A gateway's account limit as one token bucket in PostgreSQL, shared by every dispatcher.

A provider's "N messages per second" counts the account, every second, the first one included.
Each dispatcher used to keep a bucket of its own with a share of the limit set from heartbeats;
two started together each saw only itself for the first second and spent the whole limit, and a
bucket that started full with a second's worth let any one-second window hold twice the rate.

Now a taker runs one statement (`TAKE`) that locks the gateway's row in `rate_buckets`, adds the
tokens the rate refilled since the last take (up to the burst), takes up to what it asked for if
at least its minimum is there, and stamps the time. The sum of all dispatchers is held at every
moment, whoever starts, joins, dies or restarts; a dispatcher killed after taking loses those
tokens (the gateway gets less, never more). Time is the database server's clock, one clock for
every process.

A token bucket of rate r and burst b lets at most b + r x T through in any window of T seconds.
The default burst is a twentieth of a second's worth (at least one message), so every one-second
window stays within the limit + 5 %, leaving the other 5 % of the provider's usual tolerance to
the spread of the time from a take to the gateway's clock. Below 200/s that is under
`SMALL_BATCH` messages, and batches of one or two messages made the rate depend on how quickly a
batch comes back: tokens refilled while every sender loop has a batch in flight spill over the
burst. During a receipt storm at 10x the send rate (tests/test_gateway_storms.py) a 50/s
broadcast went out at 34-41/s. There the default burst is up to a tenth of a second's worth (at
most a batch, at most SMALL_BATCH): the limit + 10 % at most, the provider's tolerance, where a
few milliseconds of clock spread are a fraction of a message. A gateway's `burst` setting asks
for more where the provider allows it.

Cost: one round trip per batch, on the batch's own connection, before its claim.
"""

from __future__ import annotations

import asyncio

import asyncpg

# Batches are taken in chunks of at least this many seconds' worth of tokens (up to the burst),
# so a loop does not send a stream of one-message requests at low rates.
MIN_CHUNK_SECONDS = 0.1
DEFAULT_BURST_SECONDS = 0.05
# Below this many messages' worth, the default burst grows to at most LOW_RATE_BURST_SECONDS.
SMALL_BATCH = 10
LOW_RATE_BURST_SECONDS = 0.1
# Sleep at least this long between two looks at an empty bucket (a wait computed from the
# rate can be microseconds at high rates), and at most this long (the rate may be raised).
MIN_WAIT_SECONDS = 0.001
MAX_WAIT_SECONDS = 1.0

ENSURE = """
INSERT INTO rate_buckets (gateway, tokens) VALUES ($1, 0) ON CONFLICT (gateway) DO NOTHING
"""

# $1 gateway, $2 rate, $3 burst, $4 most to take, $5 least worth taking. FOR UPDATE makes a
# concurrent taker wait and then read the row as this one left it (not its own snapshot). Its
# clock was read before it waited, so it can be earlier than the stamp it finds: the stamp
# never goes back (else the time between the two would be refilled twice).
TAKE = """
WITH clock AS MATERIALIZED (
    SELECT clock_timestamp() AS now
), bucket AS (
    SELECT least($3::float8, b.tokens + greatest(0, extract(epoch FROM c.now - b.refilled_at))
                                        * $2::float8) AS available,
           greatest(b.refilled_at, c.now) AS stamp
    FROM rate_buckets b, clock c
    WHERE b.gateway = $1
    FOR UPDATE OF b
), taken AS (
    SELECT available, stamp,
           CASE WHEN available >= $5::float8 THEN least($4::int, floor(available)::int)
                ELSE 0 END AS granted
    FROM bucket
)
UPDATE rate_buckets r
SET tokens = t.available - t.granted, refilled_at = t.stamp
FROM taken t
WHERE r.gateway = $1
RETURNING t.granted, t.available
"""

GIVE_BACK = """
UPDATE rate_buckets SET tokens = least($3::float8, tokens + $2::float8) WHERE gateway = $1
"""


def default_burst(rate: float, max_batch: int | None = None) -> float:
    """A twentieth of a second's worth, at least one; given the gateway's `max_batch`, at least
    a tenth of a second's worth up to a batch or SMALL_BATCH messages, whichever is fewer."""
    burst = max(1.0, rate * DEFAULT_BURST_SECONDS)
    if max_batch is not None:
        small = min(float(max_batch), float(SMALL_BATCH), rate * LOW_RATE_BURST_SECONDS)
        burst = max(burst, small)
    return burst


class SharedBucket:
    """One gateway's bucket as this dispatcher uses it. `rate` is what this dispatcher refills
    at: the configured limit, lowered for a while after the gateway throttled us."""

    def __init__(
        self, gateway: str, rate: float, burst: float | None = None, max_batch: int | None = None
    ) -> None:
        self.gateway = gateway
        self.limit = rate
        self.rate = rate
        self.burst = burst if burst is not None else default_burst(rate, max_batch)
        # The bulk loops of one process queue here, so one of them at a time polls the row.
        self._lock = asyncio.Lock()

    def set_speed(self, speed: float) -> None:
        self.rate = max(self.limit * speed, 1.0)

    def chunk(self, most: int) -> float:
        """The least worth taking for a bulk batch of at most `most`: at most half the burst,
        so the bucket still has room while a waiting taker wakes and reaches the row. Were the
        chunk the whole burst, the bucket would be full the moment it may be taken and every
        millisecond of lateness would spill tokens (6 % of the rate at 500/s)."""
        return max(1.0, min(float(most), self.rate * MIN_CHUNK_SECONDS, self.burst / 2))

    async def ensure(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        await conn.execute(ENSURE, self.gateway)

    async def try_take(
        self, conn: asyncpg.Connection, most: int, least: float
    ) -> tuple[int, float]:
        """One look: (tokens granted, seconds until `least` would be there when none were)."""
        row = await conn.fetchrow(TAKE, self.gateway, self.rate, self.burst, most, least)
        if row is None:  # the row is gone (a fresh database): start empty
            await self.ensure(conn)
            return 0, least / self.rate
        granted = int(row["granted"])
        if granted:
            return granted, 0.0
        return 0, (least - float(row["available"])) / self.rate

    async def take(self, conn: asyncpg.Connection, most: int, *, urgent: bool = False) -> int:
        """Wait for tokens and take up to `most` of them; returns how many (at least one).

        Taking tokens before claiming rows means the rows are claimed at the moment they can be
        sent, so an emergency alert queued meanwhile is claimed first, not behind a batch that
        sat waiting for the limiter. An `urgent` taker does not queue behind the process's bulk
        loops and takes whatever whole tokens there are (the limit still holds)."""
        if urgent:
            return await self._poll(conn, most, 1.0)
        async with self._lock:
            return await self._poll(conn, most, self.chunk(most))

    async def _poll(self, conn: asyncpg.Connection, most: int, least: float) -> int:
        while True:
            granted, wait = await self.try_take(conn, most, least)
            if granted:
                return granted
            await asyncio.sleep(min(MAX_WAIT_SECONDS, max(MIN_WAIT_SECONDS, wait)))

    async def give_back(self, conn: asyncpg.Connection | asyncpg.Pool, n: int) -> None:
        """Return tokens taken but not used (fewer rows were due than tokens granted)."""
        if n > 0:
            await conn.execute(GIVE_BACK, self.gateway, float(n), self.burst)
