"""The dispatcher: fans alerts out and pushes their deliveries through the gateway adapters.

Per gateway it runs `concurrency` sender loops. Each loop claims a batch (one statement), waits
for the rate limiter, submits the batch through the adapter, and writes every result back (one
statement, shielded from cancellation). Loops sleep on LISTEN/NOTIFY with a poll as fallback.
On stop they finish the batch in hand and exit; rows they hold are released for others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from broadcaster import metrics, queue, receipts
from broadcaster.alerts import WAKEUP_CHANNEL
from broadcaster.fanout import fan_out_next
from broadcaster.queue import Claimed, Outcome
from broadcaster.ratelimit import TokenBucket
from broadcaster.settings import Settings
from gateway_adapters.base import (
    GatewayAdapter,
    GatewayError,
    GatewayThrottled,
    OutboundMessage,
    ReceiptSink,
    ReceiptUpdate,
    SendResult,
)

log = logging.getLogger(__name__)

# Separate budget for the status write, after the gateway call (courier uses 35 s / 15 s).
WRITE_TIMEOUT_SECONDS = 15.0
MAX_BACKOFF_SECONDS = 300.0


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.randrange(16**4):04x}"


def retry_delay(attempts: int, base: float) -> float:
    """Exponential backoff with full jitter on top of the floor, capped."""
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))
    return delay + random.uniform(0, base)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        adapters: Sequence[GatewayAdapter],
        database_url: str,
        worker: str | None = None,
    ) -> None:
        if not adapters:
            raise ValueError(
                "no gateways configured: add [[gateways]] to the BROADCASTER_CONFIG file"
            )
        self.settings = settings
        self.pool = pool
        self.adapters = list(adapters)
        self.database_url = database_url
        self.worker = worker or worker_name()
        self._wakeup = asyncio.Event()
        self._buckets = {a.config.name: TokenBucket(a.config.rate_per_second) for a in adapters}
        self._paused_until: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; returns after in-flight batches are written or released."""
        from broadcaster.database import connect

        listener = await connect(self.database_url)
        await listener.add_listener(WAKEUP_CHANNEL, self._on_notify)
        for adapter in self.adapters:
            await adapter.start(self._receipt_sink(adapter.config.name))
        primary = self.adapters[0]  # fail-over across gateways comes with the gateway work
        tasks = [asyncio.create_task(self._fanout_loop(stop), name="fanout")]
        tasks += [
            asyncio.create_task(self._sender_loop(primary, stop), name=f"send-{i}")
            for i in range(primary.config.concurrency)
        ]
        tasks.append(asyncio.create_task(self._housekeeping_loop(stop), name="housekeeping"))
        log.info(
            "dispatcher started", extra={"worker": self.worker, "gateway": primary.config.name}
        )
        try:
            await stop.wait()
        finally:
            self._wakeup.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("dispatcher task failed", exc_info=result)
            with contextlib.suppress(Exception):
                await listener.close()
            log.info("dispatcher stopped", extra={"worker": self.worker})

    def _receipt_sink(self, gateway: str) -> ReceiptSink:
        """Where receipts arriving on a gateway's own connection (SMPP deliver_sm) go: committed
        like HTTP callbacks; the adapter acknowledges them after this returns."""

        async def sink(updates: list[ReceiptUpdate]) -> None:
            async with self.pool.acquire() as conn:
                await receipts.record_receipts(conn, gateway, updates)
            for state, n in Counter(str(u.state) for u in updates).items():
                metrics.RECEIPTS.labels(gateway, state).inc(n)

        return sink

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        """Sleep until a notification, the poll interval, or stop, whichever comes first."""
        if stop.is_set():
            return
        waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
        self._wakeup.clear()

    async def _fanout_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    started = time.perf_counter()
                    result = await fan_out_next(conn)
                if result is None:
                    await self._idle(stop)
                    continue
                metrics.FANOUT_SECONDS.observe(time.perf_counter() - started)
                metrics.ALERTS_FANNED_OUT.inc()
                metrics.FANOUT_RECIPIENTS.inc(result.recipients)
                self._wakeup.set()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("fan-out failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)

    async def _sender_loop(self, adapter: GatewayAdapter, stop: asyncio.Event) -> None:
        name = adapter.config.name
        while not stop.is_set():
            pause = self._paused_until.get(name, 0.0) - time.monotonic()
            if pause > 0:
                await asyncio.sleep(min(pause, 1.0))
                continue
            try:
                batch = await queue.claim(
                    self.pool, adapter.max_batch, self.settings.lease_seconds, self.worker
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("claim failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)
                continue
            if not batch:
                await self._idle(stop)
                continue
            outcomes = await self._send(adapter, batch)
            # The write must happen even if we are being cancelled: shield it.
            await asyncio.shield(self._write(name, outcomes, batch))

    async def _send(self, adapter: GatewayAdapter, batch: list[Claimed]) -> list[Outcome]:
        name = adapter.config.name
        outcomes: list[Outcome] = []
        to_send: list[Claimed] = []
        for c in batch:
            if c.alert_status == "cancelled":
                outcomes.append(Outcome(c.id, "cancelled", error="alert cancelled"))
            elif c.subscriber_status != "active":
                outcomes.append(
                    Outcome(c.id, "cancelled", error=f"subscriber {c.subscriber_status}")
                )
            elif c.expired:
                outcomes.append(Outcome(c.id, "expired", error="alert expired before submission"))
            else:
                to_send.append(c)
        if not to_send:
            return outcomes
        await self._buckets[name].acquire(len(to_send))
        messages = [OutboundMessage(c.id, c.phone, c.message, c.alert_id) for c in to_send]
        started = time.perf_counter()
        try:
            results = await adapter.send_batch(messages)
        except GatewayError as exc:
            kind = type(exc).__name__
            metrics.GATEWAY_REQUEST_SECONDS.labels(name, "error").observe(
                time.perf_counter() - started
            )
            metrics.GATEWAY_ERRORS.labels(name, kind).inc()
            log.warning(
                "gateway submission failed",
                extra={"gateway": name, "error": kind, "batch": len(to_send)},
            )
            # Messages the gateway took before the error must not be sent again.
            accepted = {r.delivery_id for r in exc.partial_results}
            outcomes += self._results(
                name, [c for c in to_send if c.id in accepted], list(exc.partial_results)
            )
            outcomes += self._after_error(name, exc, [c for c in to_send if c.id not in accepted])
            return outcomes
        metrics.GATEWAY_REQUEST_SECONDS.labels(name, "ok").observe(time.perf_counter() - started)
        return outcomes + self._results(name, to_send, results)

    def _results(self, name: str, sent: list[Claimed], results: list[SendResult]) -> list[Outcome]:
        outcomes = []
        by_id = {r.delivery_id: r for r in results}
        for c in sent:
            r = by_id.get(c.id)
            if r is None:
                outcomes.append(Outcome(c.id, "failed", name, error="gateway gave no result"))
            elif r.accepted:
                outcomes.append(Outcome(c.id, "sent", name, r.gateway_message_id))
            elif r.retryable or r.throttled:
                if r.throttled:
                    self._pause(name, r.retry_after)
                outcomes.append(
                    self._retry_or_fail(name, c, r.error or "failed", r.throttled, r.retry_after)
                )
            else:
                outcomes.append(Outcome(c.id, "failed", name, r.gateway_message_id, r.error))
        return outcomes

    def _after_error(self, name: str, exc: GatewayError, batch: list[Claimed]) -> list[Outcome]:
        throttled = isinstance(exc, GatewayThrottled)
        retry_after = exc.retry_after if isinstance(exc, GatewayThrottled) else None
        if throttled:
            self._pause(name, retry_after)
        if not exc.retryable:
            return [Outcome(c.id, "failed", name, error=str(exc)) for c in batch]
        return [self._retry_or_fail(name, c, str(exc), throttled, retry_after) for c in batch]

    def _pause(self, name: str, retry_after: float | None) -> None:
        """Stop submitting to a throttling gateway for Retry-After (1 s when it gave none)."""
        wait = retry_after if retry_after is not None else 1.0
        self._paused_until[name] = max(self._paused_until.get(name, 0.0), time.monotonic() + wait)

    def _retry_or_fail(
        self, name: str, c: Claimed, error: str, throttled: bool, retry_after: float | None
    ) -> Outcome:
        """Back to the queue with backoff, or failed once the attempts are used up. Throttling
        is not the message's fault: it waits for Retry-After and keeps its attempt."""
        now = datetime.now(UTC)
        if throttled:
            wait = retry_after if retry_after is not None else 1.0
            due = now + timedelta(seconds=wait)
            return Outcome(c.id, "queued", error=error, due_at=due, refund_attempt=True)
        if c.attempts < self.settings.max_attempts:
            delay = retry_delay(c.attempts, self.settings.retry_base_seconds)
            return Outcome(c.id, "queued", error=error, due_at=now + timedelta(seconds=delay))
        return Outcome(c.id, "failed", name, error=error)

    async def _write(self, name: str, outcomes: list[Outcome], batch: list[Claimed]) -> None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await queue.complete(self.pool, outcomes, self.worker)
                message_ids = sorted({o.message_id for o in outcomes if o.message_id})
                if message_ids:
                    await receipts.apply_pending(self.pool, name, message_ids)
                await queue.complete_alerts(self.pool, sorted({c.alert_id for c in batch}))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # The lease runs out and the rows are claimed again; nothing is lost.
            log.exception("writing batch results failed", extra={"gateway": name})
            return
        for status, n in Counter(o.status for o in outcomes).items():
            metrics.DELIVERIES.labels(name, status).inc(n)

    async def _housekeeping_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                metrics.QUEUE_DEPTH.set(await queue.queue_depth(self.pool))
                await receipts.sweep_pending(self.pool)
                ids = [
                    r["id"]
                    for r in await self.pool.fetch(
                        "SELECT id FROM alerts WHERE status = 'dispatching'"
                    )
                ]
                if ids:
                    await queue.complete_alerts(self.pool, ids)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("housekeeping failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)
