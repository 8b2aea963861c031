"""Group commit of delivery receipts for the API: the receipts of concurrent callback requests
share one statement and one commit.

A callback handler verifies and parses its request, then awaits `ReceiptWriter.write`, which
returns once the receipts are committed (the handler answers 2xx only then) or raises
`ReceiptsUnavailable` (the handler answers 503 and the gateway tries again later).

Batching is natural: a receipt that arrives while no flush runs is written at once (no timer
adds latency at low load); whatever arrives while flushes run queues up and goes into the next
one, up to `max_batch` receipts. Two flushes may run at once (`max_flushes`), each on its own
connection: with one, every request waited for the round trip and the WAL flush of the commit
before it as well as its own, and the whole process moved in lockstep with its flushes (the API
idle while the database committed, and the other way round). Their row locks cannot deadlock:
each flush locks its deliveries in id order; if it happened anyway, the requests would be
retried one by one (below).

A failed flush fails every request in it, except that when the database refused the batch
itself (bad data, a deadlock) and not because it is unreachable, each request is tried again on
its own, so one receipt the database cannot take does not fail the others with it.

An outage is reported once when it starts and once when it ends (outage.py), not once per
failed flush: in a receipt storm that was an ERROR line for every flush while the database was
away. A connection held from an earlier flush that the server has ended since (a restart) is
replaced before it is used, and a batch that fails on a held connection because it is broken is
tried once more on a fresh one: otherwise the first receipts after the database came back were
answered 503 (and a Twilio receipt answered 503 is not sent again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Counter as Metric

from broadcaster.database import UNAVAILABLE, describe_error, is_outage, is_unstorable, trouble
from broadcaster.dispatch.outage import OutageWatch
from broadcaster.dispatch.receipts import record_batch
from broadcaster.ops import metrics

log = logging.getLogger(__name__)


class ReceiptsUnavailable(Exception):
    """The receipts were not committed (the database is unreachable, busy, or not in time):
    the sender should try again later."""


class ReceiptsRefused(Exception):
    """The database can never store these receipts (a value it cannot hold, such as a NUL in
    a text): trying again would fail again."""


@dataclass(slots=True)
class _Request:
    gateway: str
    updates: Sequence[Any]  # ReceiptUpdate here, InboundMessage for InboundWriter
    done: asyncio.Future[int]


class ReceiptWriter:
    """Commits receipts for many concurrent requests in shared transactions (one process)."""

    writes = "receipts"  # the metrics' label

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 1000,
        max_flushes: int = 2,
        acquire_timeout: float = 10.0,
        statement_timeout: float = 30.0,
        outage: OutageWatch | None = None,
    ) -> None:
        self._pool = pool
        # Shared with the process's other users of the database, so that an outage is
        # reported once for all of them.
        self._outage = outage or OutageWatch()
        self._max_batch = max(1, max_batch)
        self._max_flushes = max(1, max_flushes)
        self._acquire_timeout = acquire_timeout
        self._statement_timeout = statement_timeout
        self._queue: deque[_Request] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # A connection per flusher, held from its first flush until close (a pool acquire and
        # release per flush cost a reset round trip each time); given back after a failure.
        self._idle_conns: list[asyncpg.pool.PoolConnectionProxy] = []
        self._closed = False
        self._receipt_counters: dict[tuple[str, str], Metric] = {}
        # For tests and the benchmark: how many flushes ran and how many receipts they carried.
        self.flushes = 0
        self.flushed_receipts = 0

    async def write(
        self, gateway: str, updates: Sequence[Any], *, wait_seconds: float | None = None
    ) -> int:
        """Commit `updates` of `gateway`; returns how many were stored once they are committed.
        Raises `ReceiptsUnavailable` when they were not (also when `wait_seconds` passed
        first: a request still queued then is dropped, one already being written may still
        commit, and a repeated receipt changes nothing), `ReceiptsRefused` when they never
        can be."""
        if not updates:
            return 0
        if self._closed:
            raise ReceiptsUnavailable("the receipt writer is shut down")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(gateway, updates, done))
        if len(self._flushers) < self._max_flushes:
            flusher = asyncio.create_task(self._drain(), name="receipt-writer")
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)  # if cancelled before it ran
        if wait_seconds is None:
            return await done
        try:
            # On timeout `done` is cancelled: _take drops the request if it is still queued.
            async with asyncio.timeout(wait_seconds):
                return await done
        except TimeoutError:
            raise ReceiptsUnavailable("the receipts were not committed in time") from None

    async def close(self) -> None:
        """Refuse new receipts and wait until the queued ones are committed (or failed)."""
        self._closed = True
        while self._flushers:
            await asyncio.shield(next(iter(self._flushers)))
        while self._idle_conns:
            await self._release(self._idle_conns.pop())

    # ---------------------------------------------------------------------------- flushing

    async def _drain(self) -> None:
        """Flush until the queue is empty; started by a write while fewer than `max_flushes`
        flushers run."""
        me = asyncio.current_task()
        conn = self._idle_conns.pop() if self._idle_conns else None
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    conn = await self._flush(batch, conn)
        except BaseException:
            # Cancelled (the event loop is going away): nothing may wait forever, and the
            # connection may be mid-statement.
            self._flushers.discard(me)
            while self._queue:
                _fail([self._queue.popleft()], "the receipt writer stopped")
            if conn is not None:
                await self._release(conn)
            raise
        # Leave the set in the same step that found the queue empty: a write coming after it
        # starts a new flusher instead of counting on this one.
        self._flushers.discard(me)
        if conn is not None:
            self._idle_conns.append(conn)

    def _take(self) -> list[_Request]:
        """The next requests to commit, up to `max_batch` receipts (at least one request).
        Requests whose handler stopped waiting (its deadline passed) are dropped: the gateway
        was answered 503 and sends them again."""
        batch: list[_Request] = []
        size = 0
        while self._queue:
            request = self._queue[0]
            if request.done.done():
                self._queue.popleft()
                continue
            if batch and size + len(request.updates) > self._max_batch:
                break
            batch.append(self._queue.popleft())
            size += len(request.updates)
        return batch

    async def _flush(
        self, batch: list[_Request], conn: asyncpg.pool.PoolConnectionProxy | None
    ) -> asyncpg.pool.PoolConnectionProxy | None:
        """Commit one batch and answer its requests; returns the connection to go on with."""
        mark = self._outage.attempt()
        try:
            try:
                conn = await self._commit(batch, conn)
            except Exception as exc:
                if conn is None or not _broken(exc):
                    raise
                # A held connection the server ended: the database may well be there.
                conn = await self._commit(batch, None)
        except Exception as exc:
            conn = None  # _commit gave it back
            reason = describe_error(exc)
            if len(batch) > 1 and not is_outage(exc):
                log.warning(
                    "receipt batch refused (%s); committing its requests one by one", reason
                )
                for request in batch:
                    conn = await self._flush([request], conn)
                return conn
            log.debug("receipt flush failure", exc_info=True)  # may quote receipt data
            outcome = "refused" if is_unstorable(exc) else "unavailable"
            metrics.RECEIPT_FLUSHES.labels(self.writes, outcome).inc()
            if is_unstorable(exc):
                # Its own values: sending it again would fail again.
                log.warning("a receipt request the database cannot store was refused (%s)", reason)
                _fail(batch, reason, refused=True)
            elif is_outage(exc):
                # Logged once per outage, not per flush; the senders try again.
                self._outage.failed(exc, "committing receipts")
                _fail(batch, reason)
            else:
                log.error(
                    "receipts not committed: %s (%d requests answered 503)", reason, len(batch)
                )
                _fail(batch, reason)
        else:
            self._outage.ok(mark)
            metrics.RECEIPT_FLUSHES.labels(self.writes, "ok").inc()
            for request in batch:
                if not request.done.done():  # its handler may have been cancelled meanwhile
                    request.done.set_result(len(request.updates))
        finally:
            # Only left unresolved when we were cancelled: no handler may wait forever.
            _fail(batch, "the receipt writer stopped")
        return conn

    async def _commit(
        self, batch: list[_Request], conn: asyncpg.pool.PoolConnectionProxy | None
    ) -> asyncpg.pool.PoolConnectionProxy:
        pairs = [(r.gateway, r.updates) for r in batch]
        if conn is not None and conn.is_closed():
            await self._release(conn)
            conn = None
        try:
            if conn is None:
                conn = await self._pool.acquire(timeout=self._acquire_timeout)
                await self._prepare(conn)
            stored = await self._record(conn, pairs)
        except BaseException:
            # It may be broken (or in an unknown state after a timeout): give it back, the pool
            # resets or closes it, and the next flush takes a fresh one.
            if conn is not None:
                await self._release(conn)
            raise
        self.flushes += 1
        self.flushed_receipts += stored
        self._count(pairs)
        return conn

    async def _prepare(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        """Set up a connection a flusher took from the pool (reset when it goes back)."""
        # The statement's generic plan is index lookups like its custom plans (the tests check
        # both); left to choose, PostgreSQL planned it anew every time (about half of a small
        # flush's database time).
        await conn.execute("SET plan_cache_mode = force_generic_plan")

    async def _record(
        self, conn: asyncpg.pool.PoolConnectionProxy, pairs: list[tuple[str, Sequence[Any]]]
    ) -> int:
        """Commit one batch of (gateway, items) pairs; returns how many items were stored.
        (InboundWriter stores inbound messages through the same batching.)"""
        return await record_batch(conn, pairs, statement_timeout=self._statement_timeout)

    async def _release(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        try:
            await self._pool.release(conn, timeout=self._acquire_timeout)
        except Exception as exc:  # a broken connection: the pool has dropped it anyway
            log.debug("releasing a receipt connection failed: %s", describe_error(exc))

    def _count(self, pairs: list[tuple[str, Sequence[Any]]]) -> None:
        counts = Counter((gateway, str(u.state)) for gateway, updates in pairs for u in updates)
        for key, n in counts.items():
            counter = self._receipt_counters.get(key)
            if counter is None:
                counter = self._receipt_counters[key] = metrics.RECEIPTS.labels(*key)
            counter.inc(n)
        unknown = [
            (gateway, u) for gateway, updates in pairs for u in updates if not u.known_status
        ]
        for gateway, update in unknown:
            # Kept and moving nothing: the gateway's status mapping may need the word.
            metrics.RECEIPTS_UNKNOWN_STATUS.labels(gateway).inc()
            log.warning(
                "receipt with a status the mapping does not know: %r",
                update.provider_status[:40],
                extra={"gateway": gateway},
            )


def _fail(batch: list[_Request], reason: str, *, refused: bool = False) -> None:
    for request in batch:
        if not request.done.done():
            error = ReceiptsRefused(reason) if refused else ReceiptsUnavailable(reason)
            request.done.set_exception(error)


def _broken(exc: BaseException) -> bool:
    """Whether the error says the connection is gone (rather than that the database was slow:
    a timed-out batch is not sent again at once)."""
    return trouble(exc) == UNAVAILABLE and not isinstance(exc, TimeoutError)
