"""The dispatcher: fans alerts out and pushes their deliveries through the gateway adapters.

Gateways are used in the configured order of preference. Each sender loop picks the first
gateway that is usable now (circuit closed or due for a probe, not throttled), takes a chunk of
that gateway's rate-limit tokens, claims that many due deliveries (one statement, priority
first), submits them through the adapter and writes every result back (one statement, shielded
from cancellation). Loops sleep on LISTEN/NOTIFY with a poll as fallback (wakeups.py). On stop
they finish the batch in hand and exit.

A gateway's `rate_per_second` is one token bucket in PostgreSQL shared by every dispatcher
(ratelimit.py), so the limit holds for the sum of all dispatcher processes at every moment.
Database outages are reported once (outage.py) and retried with a jittered, growing pause.
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
import tenacity

from broadcaster import webhooks
from broadcaster.citizens import retention
from broadcaster.dispatch import outcomes, queue, receipts, roster
from broadcaster.dispatch.circuit import CircuitBreaker
from broadcaster.dispatch.fanout import fan_out_next, next_start
from broadcaster.dispatch.lane import Lane
from broadcaster.dispatch.message_ids import ConnectionReceipts
from broadcaster.dispatch.outage import OutageWatch
from broadcaster.dispatch.queue import Claimed, Outcome
from broadcaster.dispatch.ratelimit import SharedBucket
from broadcaster.dispatch.receipt_writer import ReceiptWriter
from broadcaster.dispatch.wakeups import Wakeups
from broadcaster.ingest.alerts import PRIORITIES, PRIORITY_NAMES
from broadcaster.ops import metrics
from broadcaster.settings import Settings
from gateway_adapters.base import (
    GatewayAdapter,
    GatewayError,
    GatewayMisconfigured,
    GatewayThrottled,
    GatewayUnavailable,
    OutboundMessage,
    ReceiptSink,
    SendResult,
)

log = logging.getLogger(__name__)

# Separate budget for the status write, after the gateway call (courier uses 35 s / 15 s).
WRITE_TIMEOUT_SECONDS = 15.0
MAX_BACKOFF_SECONDS = 300.0
HEARTBEAT_SECONDS = 1.0
# A dispatcher whose heartbeat is older than this no longer counts for the rate-limit shares.
LIVE_SECONDS = 3.0
# Housekeeping looks for alerts with nothing left to submit every this many heartbeats.
COMPLETION_SWEEP_TICKS = 5
# Forgetting dead dispatchers and the retention of personal data: at start, then hourly.
RETENTION_TICKS = 3600
EMERGENCY, NORMAL = PRIORITIES["emergency"], PRIORITIES["normal"]
# InternalClientError: what asyncpg raises on a connection the server ended between statements
# (a claim's transaction cut off by idle_in_transaction_session_timeout).
DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.randrange(16**4):04x}"


def retry_delay(attempts: int, base: float) -> float:
    """Seconds before submission number `attempts + 1`: exponential backoff from `base` with up
    to `base` of jitter, capped (tenacity's strategy). The dispatcher stores the result as the
    delivery's due_at, so the schedule survives a restart; tenacity only computes it."""
    strategy = tenacity.wait_exponential_jitter(
        multiplier=base, max=MAX_BACKOFF_SECONDS, jitter=base
    )
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempts)
    return float(strategy(state))


def request_outcome(exc: GatewayError) -> str:
    """The outcome label of a gateway submission that raised `exc`."""
    if isinstance(exc, GatewayThrottled):
        return "throttled"
    if isinstance(exc, GatewayMisconfigured):
        return "misconfigured"
    return "transient_error" if exc.retryable else "rejected"


def count_outcomes(gateway: str, outcomes: Sequence[Outcome]) -> None:
    """Count a written batch's outcomes: one pass over the batch, then one increment per
    distinct (status, throttled, fail-over)."""
    for (status, throttled, failover), n in Counter(
        (o.status, o.throttled, o.failover) for o in outcomes
    ).items():
        metrics.DELIVERIES.labels(gateway, status).inc(n)
        if status == "queued":
            metrics.RETRIES.labels(gateway, "throttled" if throttled else "error").inc(n)
            if failover:
                metrics.FAILOVERS.labels(gateway).inc(n)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        adapters: Sequence[GatewayAdapter],
        database_url: str,
        worker: str | None = None,
        outage: OutageWatch | None = None,
    ) -> None:
        if not adapters:
            raise ValueError(
                "no gateways configured: add [[gateways]] to the BROADCASTER_CONFIG file"
            )
        self.settings = settings
        self.pool = pool
        self.database_url = database_url
        self.worker = worker or worker_name()
        self.lanes = [
            Lane(
                a,
                SharedBucket(a.config.name, a.config.rate_per_second, a.config.burst, a.max_batch),
                CircuitBreaker(settings.breaker_failures, settings.breaker_open_seconds),
            )
            for a in adapters
        ]
        self._live = 1
        self._db = outage or OutageWatch()
        self._wakeups = Wakeups(
            database_url,
            settings.poll_interval,
            self._db,
            application_name=f"dispatcher {self.worker} wake-ups",
        )
        self._receipts = ReceiptWriter(pool, outage=self._db)
        # Alerts this dispatcher wrote results for, not yet checked for completion.
        self._touched: set[int] = set()
        self._quiet = settings.quiet_hours()
        self._stop = asyncio.Event()  # run's

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; returns after in-flight batches are written."""
        self._stop = stop
        await self._wakeups.listen()
        for lane in self.lanes:
            try:
                await lane.adapter.start(self._receipt_sink(lane.name))
            except GatewayError as exc:
                # One gateway refusing us (bad SMPP credentials) must not stop the others.
                log.error("gateway failed to start: %s", exc, extra={"gateway": lane.name})
                lane.breaker.record_failure(trip=True)
        for lane in self.lanes:
            await lane.bucket.ensure(self.pool)
        await self._heartbeat()
        loops = min(
            max(lane.adapter.config.concurrency for lane in self.lanes),
            self.settings.batches_in_flight,
        )
        tasks = [asyncio.create_task(self._fanout_loop(stop), name="fanout")]
        tasks += [
            asyncio.create_task(self._sender_loop(stop), name=f"send-{i}") for i in range(loops)
        ]
        # One more loop for emergencies only, so they never wait for a bulk batch to finish.
        tasks.append(asyncio.create_task(self._sender_loop(stop, EMERGENCY), name="emergency"))
        tasks.append(asyncio.create_task(self._housekeeping_loop(stop), name="housekeeping"))
        tasks.append(asyncio.create_task(self._wakeups.keep_listening(stop), name="wake-ups"))
        posting = webhooks.run(self.pool, self.settings, stop)
        tasks.append(asyncio.create_task(posting, name="webhooks"))
        log.info(
            "dispatcher started",
            extra={
                "worker": self.worker,
                "live": self._live,
                "gateways": ",".join(x.name for x in self.lanes),
            },
        )
        try:
            await stop.wait()
        finally:
            self._wakeups.wake_all()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("dispatcher task failed", exc_info=result)
            await self._receipts.close()
            with contextlib.suppress(*DB_ERRORS):
                await roster.leave(self.pool, self.worker)
            await self._wakeups.close()
            log.info("dispatcher stopped", extra={"worker": self.worker})

    # ------------------------------------------------------------------ coordination

    async def _heartbeat(self) -> None:
        live = await roster.heartbeat(self.pool, self.worker, LIVE_SECONDS)
        metrics.DISPATCHERS_LIVE.set(live)
        if live != self._live:
            log.info("live dispatchers changed", extra={"live": live})
        self._live = live

    def _receipt_sink(self, gateway: str) -> ReceiptSink:
        """Where receipts arriving on a gateway's own connection (SMPP deliver_sm) go: the same
        group commit as HTTP callbacks; the adapter acknowledges them after this returns, and
        answers with an error if it raises. It also tells the adapter which message ids name
        our deliveries (message_ids.py)."""
        return ConnectionReceipts(self._receipts, self.pool, gateway, self.settings)

    # ------------------------------------------------------------------ loops

    async def _fanout_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            seen = self._wakeups.count
            mark = self._db.attempt()
            try:
                async with self.pool.acquire() as conn:
                    started = time.perf_counter()
                    now = self.settings.now()
                    result = await fan_out_next(conn, now)
                    upcoming = None if result else await next_start(conn, now)
                if result is None:
                    # A scheduled alert is woken at its time, not at the next poll after it.
                    wait = (upcoming - now).total_seconds() if upcoming else None
                    await self._wakeups.idle(stop, seen, wait)
                    continue
                metrics.FANOUT_SECONDS.observe(time.perf_counter() - started)
                metrics.ALERTS_FANNED_OUT.inc()
                metrics.FANOUT_RECIPIENTS.inc(result.recipients)
                self._db.ok(mark, "fan-out")
                self._wakeups.wake_all()
            except DB_ERRORS as exc:
                await self._sleep(stop, self._db.failed(exc, "fan-out"))

    def _pick_lane(self, urgent: bool = False) -> Lane | None:
        """The most preferred gateway usable now; a gateway whose circuit is half-open gets
        one probe batch at a time. The emergency loop probes only when no gateway is known to
        work: its look at the queue mostly finds nothing, and holding the probe meanwhile sent
        the bulk loops' batches to the next gateway instead of the one coming back."""
        now = time.monotonic()
        if urgent:
            for lane in self.lanes:
                if lane.usable():
                    return lane
        for lane in self.lanes:
            if now >= lane.paused_until and lane.breaker.allow():
                return lane
        return None

    async def _sender_loop(self, stop: asyncio.Event, max_priority: int = NORMAL) -> None:
        urgent = max_priority == EMERGENCY
        while not stop.is_set():
            lane = self._pick_lane(urgent)
            if lane is None:
                await asyncio.sleep(0.05)
                continue
            # During the quiet hours only emergencies are claimed: a broadcast running into
            # them pauses (the claim is the same statement, with a lower priority bound).
            allowed = max_priority
            if allowed > EMERGENCY and self._quiet.contains(self.settings.now()):
                allowed = EMERGENCY
            mark = self._db.attempt()
            try:
                claimed, granted, seen = await self._claim_and_send(lane, allowed, urgent)
            except DB_ERRORS as exc:
                lane.breaker.release_probe()
                await self._sleep(stop, self._db.failed(exc, "claim"))
                continue
            self._db.ok(mark, "claim")
            if not claimed:
                lane.breaker.release_probe()
                if not urgent:
                    await self._complete_touched_alerts()
                await self._wakeups.idle(stop, seen)
            elif claimed < granted and not urgent:
                # The queue is running dry: the alerts of this batch may be done.
                await self._complete_touched_alerts()

    async def _claim_and_send(
        self, lane: Lane, max_priority: int, urgent: bool
    ) -> tuple[int, int, int]:
        """Take rate-limit tokens, claim up to that many deliveries, submit them and write the
        results. Returns how many were claimed, how many tokens were granted, and the wake-up
        count seen just before the claim. The rows stay locked by this connection's transaction
        until their results are committed.

        Tokens go back only when nothing was claimed, at once. Those left over by a short batch
        are dropped: given back after the batch went out, tokens taken before a one-second
        window would add to what the window holds (up to a chunk beyond rate + burst), and a
        short batch means the queue ran dry, so nobody is waiting for them."""
        async with self.pool.acquire() as conn:
            # Tokens first, then the claim: rows are claimed when they can go out at once.
            granted = await lane.bucket.take(conn, lane.adapter.max_batch, urgent=urgent)
            seen = self._wakeups.count
            batch = await queue.claim(conn, granted, self.settings.lease_seconds, max_priority)
            if not batch.rows:
                await lane.bucket.give_back(conn, granted)
                return 0, granted, seen
            metrics.RATE_TOKENS.labels(lane.name).inc(granted)
            metrics.IN_FLIGHT.inc(len(batch))
            try:
                try:
                    outcomes = await self._send(lane, batch.rows)
                except BaseException:
                    with contextlib.suppress(*DB_ERRORS):
                        await batch.abandon()
                    raise
                # The write must happen even if we are being cancelled, and the connection must
                # not go back to the pool while it runs.
                writing = asyncio.ensure_future(self._write(lane.name, batch, outcomes))
                try:
                    await asyncio.shield(writing)
                except asyncio.CancelledError:
                    await writing
                    raise
            finally:
                metrics.IN_FLIGHT.dec(len(batch))
            return len(batch), granted, seen

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep for `seconds` or until stop, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    async def _complete_touched_alerts(self) -> None:
        """Complete the alerts this dispatcher wrote results for since the last check, if they
        have nothing left to submit. Checked when the queue runs dry rather than per batch:
        during a large broadcast the check walks the open index past every row already sent."""
        if not self._touched:
            return
        ids, self._touched = sorted(self._touched), set()
        try:
            await queue.complete_alerts(self.pool, ids)
        except DB_ERRORS as exc:
            self._db.failed(exc, "completing alerts")  # housekeeping retries

    async def _housekeeping_loop(self, stop: asyncio.Event) -> None:
        ticks = 0
        while not stop.is_set():
            mark = self._db.attempt()
            try:
                await self._heartbeat()
                if ticks % 2 == 0:
                    await queue.refresh_gauges(self.pool)
                    await receipts.sweep_pending(self.pool)
                if ticks % COMPLETION_SWEEP_TICKS == 0:
                    # Safety net for alerts whose last batch another dispatcher wrote before
                    # dying; the sender loops complete their own alerts as the queue runs dry.
                    ids = [
                        r["id"]
                        for r in await self.pool.fetch(
                            "SELECT id FROM alerts WHERE status = 'dispatching'"
                        )
                    ]
                    if ids:
                        await queue.complete_alerts(self.pool, ids)
                # Alerts that ended, to their status_webhook (cost: see outcomes.py).
                await outcomes.queue_due(self.pool, self.settings.outcome_receipt_wait_seconds)
                if ticks % RETENTION_TICKS == 0:
                    await roster.forget_dead(self.pool)
                    await retention.run(self.pool, self.settings)
                self._db.ok(mark, "housekeeping")
            except DB_ERRORS as exc:
                self._db.failed(exc, "housekeeping")
            for lane in self.lanes:
                metrics.CIRCUIT_OPEN.labels(lane.name).set(lane.breaker.state != "closed")
                metrics.GATEWAY_SPEED.labels(lane.name).set(lane.speed)
            ticks += 1
            await self._sleep(stop, HEARTBEAT_SECONDS)

    # ------------------------------------------------------------------ one batch

    async def _send(self, lane: Lane, batch: list[Claimed]) -> list[Outcome]:
        name = lane.name
        outcomes: list[Outcome] = []
        to_send: list[Claimed] = []
        for c in batch:
            if c.alert_status == "cancelled":
                outcomes.append(Outcome(c.id, "cancelled", error="alert cancelled"))
            elif c.subscriber_status != "active" and c.kind != "notice":
                # A notice (a sign-up code, the answer to a keyword) goes to whoever asked for
                # it, active or not; an alert only to active subscribers.
                outcomes.append(
                    Outcome(c.id, "cancelled", error=f"subscriber {c.subscriber_status}")
                )
            elif c.expired:
                outcomes.append(Outcome(c.id, "expired", error="alert expired before submission"))
            else:
                to_send.append(c)
        if not to_send:
            lane.breaker.release_probe()
            return outcomes
        messages = [
            OutboundMessage(
                c.id, c.phone, c.message, c.alert_id, PRIORITY_NAMES[c.priority], c.expires_at
            )
            for c in to_send
        ]
        metrics.GATEWAY_BATCH_SIZE.labels(name).observe(len(messages))
        started = time.perf_counter()
        try:
            results = await lane.adapter.send_batch(messages)
        except GatewayError as exc:
            kind = type(exc).__name__
            outcome = request_outcome(exc)
            metrics.GATEWAY_REQUEST_SECONDS.labels(name, outcome).observe(
                time.perf_counter() - started
            )
            metrics.GATEWAY_REQUESTS.labels(name, outcome).inc()
            metrics.GATEWAY_ERRORS.labels(name, kind).inc()
            log.warning(
                "gateway submission failed",
                extra={"gateway": name, "error": kind, "batch": len(to_send)},
            )
            # Messages the gateway took before the error must not be sent again.
            accepted = {r.delivery_id for r in exc.partial_results}
            outcomes += self._results(
                lane, [c for c in to_send if c.id in accepted], list(exc.partial_results)
            )
            outcomes += self._after_error(lane, exc, [c for c in to_send if c.id not in accepted])
            return outcomes
        elapsed = time.perf_counter() - started
        outcomes += self._results(lane, to_send, results)
        took_any = any(r.accepted for r in results)
        throttled = any(r.throttled for r in results)
        if took_any or not any(r.retryable and not r.throttled for r in results):
            lane.breaker.record_success()
            outcome = "ok" if took_any or not throttled else "throttled"
        else:
            lane.breaker.record_failure()
            outcome = "transient_error"
        metrics.GATEWAY_REQUEST_SECONDS.labels(name, outcome).observe(elapsed)
        metrics.GATEWAY_REQUESTS.labels(name, outcome).inc()
        if not throttled:
            lane.speed_up()
        return outcomes

    def _results(self, lane: Lane, sent: list[Claimed], results: list[SendResult]) -> list[Outcome]:
        name = lane.name
        outcomes = []
        by_id = {r.delivery_id: r for r in results}
        for c in sent:
            r = by_id.get(c.id)
            if r is None:
                outcomes.append(Outcome(c.id, "failed", name, error="gateway gave no result"))
            elif r.accepted:
                outcomes.append(Outcome(c.id, "sent", name, r.gateway_message_id))
            elif r.expired:
                outcomes.append(Outcome(c.id, "expired", error=r.error))
            elif r.retryable or r.throttled:
                if r.throttled:
                    self._pause(lane, r.retry_after)
                outcomes.append(
                    self._retry_or_fail(lane, c, r.error or "failed", r.throttled, r.retry_after)
                )
            elif r.opted_out:
                # The recipient unsubscribed from our sender: the write-back opts them out.
                outcomes.append(
                    Outcome(c.id, "failed", name, r.gateway_message_id, r.error, opted_out=True)
                )
                log.info("carrier opt-out", extra={"gateway": name, "delivery_id": c.id})
            else:
                outcomes.append(Outcome(c.id, "failed", name, r.gateway_message_id, r.error))
        return outcomes

    def _after_error(self, lane: Lane, exc: GatewayError, batch: list[Claimed]) -> list[Outcome]:
        throttled = isinstance(exc, GatewayThrottled)
        retry_after = exc.retry_after if isinstance(exc, GatewayThrottled) else None
        # The gateway answered that it failed, or could not be reached: nothing went out.
        untaken = isinstance(exc, GatewayUnavailable) and not exc.maybe_taken
        if throttled:
            self._pause(lane, retry_after)
            lane.breaker.release_probe()
        elif exc.retryable or isinstance(exc, GatewayMisconfigured):
            # The gateway's fault, not the messages': count it against the gateway. Bad
            # credentials open the circuit at once; the messages wait for a working gateway.
            lane.breaker.record_failure(trip=isinstance(exc, GatewayMisconfigured))
            if isinstance(exc, GatewayMisconfigured):
                log.error("gateway misconfigured", extra={"gateway": lane.name})
        else:
            # The gateway refused the content itself: retrying elsewhere would not help.
            lane.breaker.record_success()
            return [Outcome(c.id, "failed", lane.name, error=str(exc)) for c in batch]
        return [
            self._retry_or_fail(lane, c, str(exc), throttled, retry_after, untaken) for c in batch
        ]

    @staticmethod
    def _pause(lane: Lane, retry_after: float | None) -> None:
        """Stop submitting to a throttling gateway for Retry-After (1 s when it gave none), and
        come back slower."""
        wait = retry_after if retry_after is not None else 1.0
        if time.monotonic() >= lane.paused_until:
            lane.slow_down()  # once per throttling episode, not once per throttled message
        lane.paused_until = max(lane.paused_until, time.monotonic() + wait)

    def _retry_or_fail(
        self,
        lane: Lane,
        c: Claimed,
        error: str,
        throttled: bool,
        retry_after: float | None,
        untaken: bool = False,
    ) -> Outcome:
        """Back to the queue, or failed once the attempts are used up.

        Throttling is not the message's fault: it keeps its attempt and waits for Retry-After
        unless another gateway can take it now. After a gateway failure the message goes again
        at once when another gateway is usable (fail-over), else after exponential backoff.
        A failure that took nothing (`untaken`: the gateway answered 500/503 or refused the
        connection) is the gateway's outage, not the message's: it keeps its attempt too, so
        with one gateway an outage longer than the retries last misses nobody; the circuit
        breaker bounds the requests meanwhile, and a failure that may have sent the message
        (timeout, reset, unreadable answer) still counts, which bounds the duplicates."""
        now = datetime.now(UTC)
        elsewhere = any(other is not lane and other.usable() for other in self.lanes)
        if throttled:
            wait = 0.0 if elsewhere else (retry_after if retry_after is not None else 1.0)
            due = now + timedelta(seconds=wait)
            return Outcome(
                c.id,
                "queued",
                error=error,
                due_at=due,
                refund_attempt=True,
                failover=elsewhere,
                throttled=True,
            )
        if untaken:
            delay = 0.0 if elsewhere else retry_delay(c.attempts, self.settings.retry_base_seconds)
            due = now + timedelta(seconds=delay)
            return Outcome(
                c.id, "queued", error=error, due_at=due, refund_attempt=True, failover=elsewhere
            )
        if c.attempts < self.settings.max_attempts:
            delay = 0.0 if elsewhere else retry_delay(c.attempts, self.settings.retry_base_seconds)
            due = now + timedelta(seconds=delay)
            return Outcome(c.id, "queued", error=error, due_at=due, failover=elsewhere)
        return Outcome(c.id, "failed", lane.name, error=error)

    async def _write(self, name: str, batch: queue.Batch, outcomes: list[Outcome]) -> None:
        """Write a submitted batch's results. Refused for now (the disk full, a lock or
        statement timeout), the write is tried again with the outage's backoff while the rows
        stay held, for up to lease_seconds or until the dispatcher stops: put back, they would
        be sent again. Any other failure puts them back (nothing was committed)."""
        where = f"writing the results of a batch sent through {name}"
        deadline = time.monotonic() + self.settings.lease_seconds
        while True:
            mark = self._db.attempt()
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await batch.finish(outcomes)
            except DB_ERRORS as exc:
                pause = self._db.failed(exc, where)
                if batch.held and not self._stop.is_set() and time.monotonic() + pause < deadline:
                    await self._sleep(self._stop, pause)
                    continue
                # Nothing was committed: the rows are due again as they were.
                with contextlib.suppress(*DB_ERRORS):
                    await batch.abandon()
                return
            self._db.ok(mark, where)
            break
        self._touched.update(c.alert_id for c in batch.rows)
        count_outcomes(name, outcomes)
        message_ids = sorted({o.message_id for o in outcomes if o.message_id})
        if message_ids:
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await receipts.apply_pending(batch.conn, name, message_ids)
            except DB_ERRORS as exc:
                self._db.failed(exc, "applying early receipts")  # the sweep retries
