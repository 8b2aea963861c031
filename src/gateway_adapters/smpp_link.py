"""One SMPP connection as the adapter uses it: sequence numbers, requests waiting for their
responses, and the window through which submit_sm go (see `Link`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from gateway_adapters.base import SendResult
from gateway_adapters.smpp_codec import MAX_SEQUENCE, DeliverSm, Pdu, SubmitSm, encode

log = logging.getLogger(__name__)


class SmppConnectionLost(ConnectionError):
    """The connection a request was waiting on is gone."""


class Submit:
    """One submit_sm through the window: queued for a slot, then in flight until answered.

    `done` is called once with the outcome: the response, an exception (`TimeoutError`,
    `SmppConnectionLost`), or None when it was not sent because its batch was throttled first.
    `on_response`, if any, sees the response first, in the read loop (see `Link.resolve`).
    """

    __slots__ = ("batch", "deadline", "done", "first", "on_response", "pdu")

    def __init__(
        self,
        pdu: SubmitSm,
        batch: Batch,
        done: Callable[[Pdu | BaseException | None], None],
        *,
        first: bool = True,
        on_response: Callable[[Pdu], None] | None = None,
    ) -> None:
        self.pdu = pdu
        self.batch = batch
        self.done = done
        self.first = first  # the first (or only) part of its message
        self.on_response = on_response
        self.deadline = 0.0


def deliver_outcome(future: asyncio.Future[Pdu | BaseException | None], outcome: Any) -> None:
    """A submission's outcome to the coroutine awaiting it, unless it stopped waiting."""
    if not future.done():
        future.set_result(outcome)


class Link:
    """One TCP connection: sequence numbers, requests waiting for their responses, the window.

    submit_sm go through the window without a coroutine each: `enqueue` queues them, `pump`
    encodes as many as there are free slots and writes them in one go, the read loop hands each
    response to its submission's callback and pumps again once per read. Submissions not
    answered within `timeout` seconds are failed by one timer (`_expire`), not one each.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        window: int,
        timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.window = max(1, window)
        self.timeout = timeout
        self.bound = False
        self.closed = asyncio.Event()
        # sequence number -> the request (a future) or the submission waiting for its answer
        self.pending: dict[int, asyncio.Future[Pdu] | Submit] = {}
        self.receipts: asyncio.Queue[DeliverSm] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.in_window = 0  # submissions in flight
        self.queue: deque[Submit] = deque()  # submissions waiting for a slot
        self.sent: deque[Submit] = deque()  # in flight, oldest first (answered ones pruned)
        self._expiry: asyncio.TimerHandle | None = None
        self._sequence = 0

    @property
    def usable(self) -> bool:
        return self.bound and not self.closed.is_set()

    def next_sequence(self) -> int:
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        return self._sequence

    def send(self, pdu: Pdu) -> None:
        self.send_bytes(encode(pdu))

    def send_bytes(self, data: bytes) -> None:
        """Write encoded PDUs (several at once, in one write, where the caller has them)."""
        if self.closed.is_set():
            raise SmppConnectionLost("connection closed")
        self.writer.write(data)

    async def request(self, pdu: Pdu, seconds: float) -> Pdu:
        """Send a request outside the window (bind, enquire_link, unbind) and wait up to
        `seconds` for the response with its sequence number."""
        pdu.sequence_number = self.next_sequence()
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.pending[pdu.sequence_number] = future
        try:
            self.send(pdu)
            async with asyncio.timeout(seconds):
                await self.writer.drain()
                return await future
        except TimeoutError:  # an OSError too, but only this request's problem
            raise
        except OSError as exc:  # ConnectionResetError and friends from drain()
            self.lost()
            raise SmppConnectionLost(str(exc)) from exc
        finally:
            self.pending.pop(pdu.sequence_number, None)

    def enqueue(self, submissions: Sequence[Submit]) -> None:
        """Queue submissions for the window and send what fits now."""
        if self.closed.is_set():
            for item in submissions:
                item.done(SmppConnectionLost("connection closed"))
            return
        self.queue.extend(submissions)
        self.pump()

    def pump(self) -> None:
        """Send queued submissions while the window has room, in one write."""
        if self.closed.is_set():
            return
        sent = self.sent
        while sent and self.pending.get(sent[0].pdu.sequence_number) is not sent[0]:
            sent.popleft()  # answered (or failed) already
        chunks: list[bytes] = []
        deadline = 0.0
        while self.in_window < self.window and self.queue:
            item = self.queue.popleft()
            batch = item.batch
            if batch.cancelled:
                continue
            if item.first and batch.throttled:
                item.done(None)  # the SMSC asked us to slow down: not sent
                continue
            if not deadline:
                deadline = asyncio.get_running_loop().time() + self.timeout
            pdu = item.pdu
            pdu.sequence_number = sequence = self.next_sequence()
            item.deadline = deadline
            chunks.append(encode(pdu))
            self.pending[sequence] = item
            self.in_window += 1
            sent.append(item)
        if chunks:
            self.writer.write(b"".join(chunks))
            if self._expiry is None:
                self._expiry = asyncio.get_running_loop().call_at(sent[0].deadline, self._expire)

    def _expire(self) -> None:
        """Fail the submissions whose answer is overdue (their slots are free again)."""
        self._expiry = None
        now = asyncio.get_running_loop().time()
        sent, pending = self.sent, self.pending
        while sent:
            item = sent[0]
            sequence = item.pdu.sequence_number
            if pending.get(sequence) is item:
                if item.deadline > now:
                    break
                del pending[sequence]
                self.in_window -= 1
                item.done(TimeoutError("smpp timeout"))
            sent.popleft()
        if sent:
            self._expiry = asyncio.get_running_loop().call_at(sent[0].deadline, self._expire)
        self.pump()

    def resolve(self, pdu: Pdu) -> None:
        """Hand a response to what waits for it. A submission's `on_response` runs here, before
        any PDU read after it is handled: state that later PDUs depend on is in place when they
        are handled (a coroutine waiting on the answer resumes only after the read loop let go,
        maybe after a receipt read behind it)."""
        entry = self.pending.pop(pdu.sequence_number, None)
        if isinstance(entry, Submit):
            self.in_window -= 1
            if entry.on_response is not None:
                entry.on_response(pdu)
            entry.done(pdu)
        elif entry is not None:
            if not entry.done():
                entry.set_result(pdu)
        else:
            # Its request timed out already; nothing waits for it any more.
            log.debug("unmatched response seq=%d", pdu.sequence_number)

    def lost(self) -> None:
        """Mark the connection gone and fail every request still waiting on it."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.bound = False
        self.writer.close()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        pending, self.pending = self.pending, {}
        queued, self.queue = self.queue, deque()
        self.sent.clear()
        self.in_window = 0
        for entry in pending.values():
            if isinstance(entry, Submit):
                entry.done(SmppConnectionLost("connection lost"))
            elif not entry.done():
                entry.set_exception(SmppConnectionLost("connection lost"))
        for item in queued:
            if not item.batch.cancelled:
                item.done(SmppConnectionLost("connection lost"))

    async def stop(self) -> None:
        """Close the socket and stop the connection's tasks (callable from one of them)."""
        self.lost()
        current = asyncio.current_task()
        others = [t for t in self.tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self.writer.wait_closed()


class Batch:
    """One send_batch call: its results as they come in, and what its messages share."""

    __slots__ = ("cancelled", "finished", "remaining", "results", "tasks", "throttled")

    def __init__(self, size: int) -> None:
        self.throttled = False  # an answer said "slow down": send no further message
        self.cancelled = False  # the caller gave up: send nothing more
        self.results: list[SendResult | None] = [None] * size
        self.remaining = size
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[None]] = []  # one per long message

    def settle(self, index: int, result: SendResult) -> None:
        self.results[index] = result
        self.remaining -= 1
        if not self.remaining and not self.finished.done():
            self.finished.set_result(None)

    def fail_on_error(self, task: asyncio.Task[None]) -> None:
        """A long message's task failed: send_batch raises its error rather than wait forever."""
        error = None if task.cancelled() else task.exception()
        if error is not None and not self.finished.done():
            self.finished.set_exception(error)
