"""SMPP 3.4 adapter: one bind_transceiver connection over asyncio streams, submit_sm with a
window, delivery receipts as deliver_sm acknowledged only after they are committed.

Configuration (`[[gateways]]` with `type = "smpp"`):
- `base_url = "smpp://host:port"` (port 2775 if omitted), `token = "system_id:password"`;
- `sender`: the source address; alphanumeric -> TON 5 / NPI 0, digits -> TON 1 / NPI 1;
- `timeout_seconds`: connect, bind and per-PDU response timeout.
- `window = N`: unacknowledged submit_sm in flight (the SMSC account's window; default 10).

The other SMPP options (keepalive, reconnect backoff, message id bases, registered_delivery,
receipt batching) are class attributes listed in `SmppAdapter.options`; each can be set in the
gateway's entry, or by a keyword argument to the constructor.

Receipts: `receipt_concurrency` workers per connection each take what arrived (up to
`receipt_batch`), commit it through on_receipts and only then answer those deliver_sm; while one
batch commits, the next is read and committed beside it. The SMSC's window for deliver_sm bounds
how many are in our hands at once, so it bounds the batches too: the receipt rate is about that
window divided by the time from the SMSC's send to our answer.

Ids: SMSCs often write an id in hex in submit_sm_resp and in decimal in the receipt (or the
reverse, or zero-padded, or in another case). Ids are stored and matched in the canonical form of
`smpp_codec.canonical_message_id` with the configured bases (`submit_id_base`, `receipt_id_base`).

Receipts carry `phone=None`: an SMPP message id names one recipient's message on its own, and
SMSCs differ in how they write the receipt's source_addr.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from gateway_adapters.base import (
    AdapterLimits,
    CallbackRejected,
    DeliveryState,
    GatewayConfig,
    GatewayMisconfigured,
    GatewayUnavailable,
    OptionTypes,
    OutboundMessage,
    ReceiptSink,
    ReceiptsNotStored,
    ReceiptUpdate,
    SendResult,
)
from gateway_adapters.smpp_codec import (
    DELIVER_SM_RESP,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    MAX_SEQUENCE,
    NPI_ISDN,
    NPI_UNKNOWN,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    BindTransceiver,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    FrameReader,
    GenericNack,
    MessageTooLong,
    Pdu,
    PduError,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    absolute_time,
    canonical_message_id,
    canonical_receipt_id,
    decode,
    encode,
    encode_response,
    is_delivery_receipt,
    parse_delivery_receipt,
    split_message,
    status_name,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 2775
# Answers that mean "slow down": not the message's fault, no attempt should be charged for them.
THROTTLE_STATUSES = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
# Answers that mean "this time, not this message": try again later.
TRANSIENT_STATUSES = frozenset({ESME_RSYSERR, ESME_RX_T_APPN, ESME_RINVBNDSTS})
PRIORITY_FLAGS = {"emergency": 3, "high": 2}  # GSM treats any non-zero flag as "priority"
# Receipts a part of a long message that are worth forwarding under the message's id: one failed
# part means the recipient did not get the whole text.
PART_FAILURE_STATES = frozenset({DeliveryState.FAILED, DeliveryState.EXPIRED})


class SmppConfigError(GatewayMisconfigured, ValueError):
    """The `[[gateways]]` entry cannot describe an SMPP connection."""


class SmppConnectionLost(ConnectionError):
    """The connection a request was waiting on is gone."""


class SmppBindRejected(Exception):
    """The SMSC answered bind_transceiver with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"bind_transceiver refused: {status_name(status)}")
        self.status = status


@dataclass(frozen=True, slots=True)
class _Endpoint:
    host: str
    port: int
    system_id: str
    password: str
    source_addr: str
    source_ton: int
    source_npi: int


def parse_config(config: GatewayConfig) -> _Endpoint:
    """Host, port, credentials and source address from a gateway entry; `SmppConfigError`."""
    where = f"gateway {config.name!r}"
    url = urlsplit(config.base_url)
    if url.scheme != "smpp" or not url.hostname:
        raise SmppConfigError(f"{where}: base_url must look like smpp://host:port")
    try:
        port = url.port or DEFAULT_PORT
    except ValueError:
        raise SmppConfigError(f"{where}: base_url has an invalid port") from None
    system_id, sep, password = config.token.partition(":")
    if not sep or not system_id:
        raise SmppConfigError(f"{where}: token must be 'system_id:password'")
    # SMPP 3.4 limits (without the NUL): system_id 15, password 8 octets.
    if len(system_id.encode("latin-1", "replace")) > 15:
        raise SmppConfigError(f"{where}: system_id is longer than 15 characters")
    if len(password.encode("latin-1", "replace")) > 8:
        raise SmppConfigError(f"{where}: password is longer than 8 characters")
    sender = config.sender.strip()
    digits = sender.removeprefix("+")
    if digits.isascii() and digits.isdigit():
        source, ton, npi = digits, TON_INTERNATIONAL, NPI_ISDN
    else:
        source, ton, npi = sender, TON_ALPHANUMERIC, NPI_UNKNOWN
    if not source or len(source) > 20:
        raise SmppConfigError(f"{where}: sender must be 1 to 20 characters")
    return _Endpoint(url.hostname, port, system_id, password, source, ton, npi)


def destination_for_phone(phone: str) -> str | None:
    """'+4520123456' -> '4520123456' (sent as TON 1 / NPI 1); None when not E.164 digits."""
    digits = phone.removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return digits


class _Submit:
    """One submit_sm through the window: queued for a slot, then in flight until answered.

    `done` is called once with the outcome: the response, an exception (`TimeoutError`,
    `SmppConnectionLost`), or None when it was not sent because its batch was throttled first.
    `on_response`, if any, sees the response first, in the read loop (see `_Link.resolve`).
    """

    __slots__ = ("batch", "deadline", "done", "first", "on_response", "pdu")

    def __init__(
        self,
        pdu: SubmitSm,
        batch: _Batch,
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


def _answer(future: asyncio.Future[Pdu | BaseException | None], outcome: Any) -> None:
    """A submission's outcome to the coroutine awaiting it, unless it stopped waiting."""
    if not future.done():
        future.set_result(outcome)


class _Link:
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
        self.pending: dict[int, asyncio.Future[Pdu] | _Submit] = {}
        self.receipts: asyncio.Queue[DeliverSm] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.in_window = 0  # submissions in flight
        self.queue: deque[_Submit] = deque()  # submissions waiting for a slot
        self.sent: deque[_Submit] = deque()  # in flight, oldest first (answered ones pruned)
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

    def enqueue(self, submissions: Sequence[_Submit]) -> None:
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
        if isinstance(entry, _Submit):
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
            if isinstance(entry, _Submit):
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


class _LongMessage:
    """A long message being (or having been) submitted, for matching its parts' receipts."""

    __slots__ = ("deferred", "done", "message_id")

    def __init__(self) -> None:
        self.message_id: str | None = None  # the last part's id, once every part is accepted
        self.done = False
        # Receipts of its parts that arrived before its last part was accepted: answered later.
        self.deferred: list[tuple[_Link, DeliverSm]] = []

    def finish(self, message_id: str | None) -> None:
        """Submission is over (`message_id` None if it failed): look at deferred receipts again."""
        self.message_id, self.done = message_id, True
        deferred, self.deferred = self.deferred, []
        for link, pdu in deferred:
            if not link.closed.is_set():  # else the SMSC sends it again after the reconnect
                link.receipts.put_nowait(pdu)


@dataclass(slots=True)
class _Verdict:
    """What the receipt worker does with one deliver_sm."""

    update: ReceiptUpdate | None = None  # commit this, then answer
    forget: str | None = None  # part id to drop from the part map once committed
    defer_to: _LongMessage | None = None  # answer later: its message is still being submitted


class _Batch:
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


class SmppAdapter:
    """`GatewayAdapter` for an SMSC speaking SMPP 3.4 (bind_transceiver)."""

    type: ClassVar[str] = "smpp"
    # One recipient per submit_sm, over one bound connection; the operator sets the rate.
    limits: ClassVar[AdapterLimits] = AdapterLimits(1, None, None)
    # Every option below can be set in the gateway's `[[gateways]]` entry or, for tests, by a
    # keyword argument to the constructor (which wins).
    options: ClassVar[OptionTypes] = {
        "window": int,
        "enquire_link_interval": float,
        "enquire_link_timeout": float,
        "reconnect_initial": float,
        "reconnect_max": float,
        "submit_id_base": int,
        "receipt_id_base": int,
        "registered_delivery": int,
        "receipt_batch": int,
        "receipt_concurrency": int,
    }

    # Defaults of the SMPP options (see the module docstring for why they are not in the file).
    window: int = 10  # unacknowledged submit_sm in flight on the connection
    enquire_link_interval: float = 30.0
    enquire_link_timeout: float = 10.0
    reconnect_initial: float = 0.5  # doubled after each failed attempt ...
    reconnect_max: float = 30.0  # ... up to this
    submit_id_base: int = 16  # how the SMSC writes ids in submit_sm_resp (10, 16, or 0 = opaque)
    receipt_id_base: int = 10  # how it writes them in receipt texts
    registered_delivery: int = 1  # final receipts, success and failure
    unbind_timeout: float = 1.0
    throttle_retry_after: float = 1.0
    receipt_batch: int = 500  # receipts committed together at most (one on_receipts call)
    # on_receipts calls in flight at once: while one batch commits, the next is read and
    # committed beside it (each answered after its own commit).
    receipt_concurrency: int = 3
    part_map_size: int = 100_000  # ids of non-last parts of long messages we still recognise

    def __init__(
        self,
        config: GatewayConfig,
        callback_url: str,
        session: Any = None,  # the HTTP session other adapters share; SMPP has no use for it
        *,
        window: int | None = None,
        enquire_link_interval: float | None = None,
        enquire_link_timeout: float | None = None,
        reconnect_initial: float | None = None,
        reconnect_max: float | None = None,
        submit_id_base: int | None = None,
        receipt_id_base: int | None = None,
        registered_delivery: int | None = None,
        receipt_batch: int | None = None,
        receipt_concurrency: int | None = None,
    ) -> None:
        self.config = config
        self.callback_url = callback_url
        self.endpoint = parse_config(config)
        overrides: Mapping[str, Any] = {
            "window": window,
            "enquire_link_interval": enquire_link_interval,
            "enquire_link_timeout": enquire_link_timeout,
            "reconnect_initial": reconnect_initial,
            "reconnect_max": reconnect_max,
            "submit_id_base": submit_id_base,
            "receipt_id_base": receipt_id_base,
            "registered_delivery": registered_delivery,
            "receipt_batch": receipt_batch,
            "receipt_concurrency": receipt_concurrency,
        }
        for name, value in overrides.items():
            if value is None:
                value = config.extra.get(name)
            if value is not None:
                setattr(self, name, value)
        for name in ("submit_id_base", "receipt_id_base"):
            if getattr(self, name) not in (0, 10, 16):
                raise SmppConfigError(f"gateway {config.name!r}: {name} must be 0, 10 or 16")
        if not 1 <= self.window <= 10_000:
            raise SmppConfigError(f"gateway {config.name!r}: window must be 1 to 10000")
        self._link: _Link | None = None
        self._runner: asyncio.Task[None] | None = None
        self._on_receipts: ReceiptSink | None = None
        self._closing = False
        self._ref = 0
        # canonical id of a non-last part of a long message -> that message
        self._parts: OrderedDict[str, _LongMessage] = OrderedDict()

    @property
    def max_batch(self) -> int:
        return max(1, self.config.max_batch)

    @property
    def bound(self) -> bool:
        return self._link is not None and self._link.usable

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, on_receipts: ReceiptSink) -> None:
        """Connect and bind, then keep the connection up in the background.

        Raises `GatewayMisconfigured` if the SMSC refuses the first bind (wrong credentials want
        an operator). If the SMSC is unreachable it only logs: reconnection goes on with backoff,
        and `send_batch` raises `GatewayUnavailable` until bound.
        """
        if self._runner is not None:
            return
        self._on_receipts = on_receipts
        self._closing = False
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._maintain(first), name=f"smpp-{self.config.name}")
        try:
            await asyncio.shield(first)
        except GatewayMisconfigured:
            await self._stop_runner()
            raise

    async def close(self) -> None:
        """Unbind (waiting briefly for unbind_resp), close the socket and stop every task.

        Receipts not yet committed stay unacknowledged, so the SMSC delivers them again later.
        """
        self._closing = True
        await self._stop_runner()
        link, self._link = self._link, None
        if link is None:
            return
        if link.usable:
            with contextlib.suppress(SmppConnectionLost, TimeoutError):
                await link.request(Unbind(), self.unbind_timeout)
        await link.stop()

    async def _stop_runner(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _maintain(self, first: asyncio.Future[None]) -> None:
        """Connect, bind, wait for the connection to drop, back off, repeat."""
        delay = self.reconnect_initial
        name = self.config.name
        while True:
            try:
                link = await self._connect()
            except SmppBindRejected as exc:
                if not first.done():
                    first.set_exception(GatewayMisconfigured(f"smpp gateway {name}: {exc}"))
                    return
                log.error("smpp gateway %s: %s; retrying in %.1f s", name, exc, delay)
            except (OSError, TimeoutError, PduError, SmppConnectionLost) as exc:
                log.warning(
                    "smpp gateway %s: cannot connect (%s: %s); retrying in %.1f s",
                    name,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            else:
                delay = self.reconnect_initial
                self._link = link
                log.info("smpp gateway %s: bound", name)
                if not first.done():
                    first.set_result(None)
                try:
                    await link.closed.wait()
                finally:
                    # On cancellation (close) the link is close()'s to unbind; else it is dead.
                    if not self._closing:
                        self._link = None
                        await link.stop()
                log.warning("smpp gateway %s: connection lost; reconnecting", name)
            if not first.done():
                first.set_result(None)  # unreachable at start: go on trying in the background
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _connect(self) -> _Link:
        ep = self.endpoint
        timeout = self.config.timeout_seconds
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), timeout)
        link = _Link(reader, writer, self.window, timeout)
        link.tasks.append(asyncio.create_task(self._read_loop(link)))
        try:
            bind = BindTransceiver(system_id=ep.system_id, password=ep.password)
            resp = await link.request(bind, timeout)
            if resp.command_status != ESME_ROK:
                raise SmppBindRejected(resp.command_status)
            link.bound = True
            link.tasks.append(asyncio.create_task(self._keepalive(link)))
            for _ in range(max(1, self.receipt_concurrency)):
                link.tasks.append(asyncio.create_task(self._receipt_worker(link)))
        except BaseException:
            await link.stop()
            raise
        return link

    # -- the connection's tasks ------------------------------------------------------------------

    async def _read_loop(self, link: _Link) -> None:
        """Route every incoming PDU; mark the link lost when the stream ends or breaks."""
        frames = FrameReader(link.reader)
        try:
            while all(self._route(link, frame) for frame in await frames.frames()):
                link.pump()  # answers freed slots: fill them, one write for the whole read
        except (asyncio.IncompleteReadError, OSError, PduError, SmppConnectionLost) as exc:
            if not self._closing:
                log.debug("smpp gateway %s: read loop ended: %r", self.config.name, exc)
        finally:
            link.lost()

    def _route(self, link: _Link, frame: bytes) -> bool:
        """Handle one incoming PDU; False once the SMSC unbound (stop reading)."""
        try:
            pdu = decode(frame)
        except PduError as exc:
            log.warning("smpp gateway %s: undecodable PDU: %s", self.config.name, exc)
            link.send(GenericNack(sequence_number=exc.sequence_number, command_status=exc.status))
            return True
        if pdu.is_response:
            link.resolve(pdu)
        elif isinstance(pdu, DeliverSm):
            # Acknowledged by a receipt worker once committed, never here.
            link.receipts.put_nowait(pdu)
        elif isinstance(pdu, EnquireLink):
            link.send(EnquireLinkResp(sequence_number=pdu.sequence_number))
        elif isinstance(pdu, Unbind):
            link.send(UnbindResp(sequence_number=pdu.sequence_number))
            log.info("smpp gateway %s: the SMSC unbound", self.config.name)
            return False
        else:
            link.send(
                GenericNack(sequence_number=pdu.sequence_number, command_status=ESME_RINVCMDID)
            )
        return True

    async def _keepalive(self, link: _Link) -> None:
        """enquire_link every interval; a connection that does not answer is dropped."""
        while True:
            await asyncio.sleep(self.enquire_link_interval)
            try:
                await link.request(EnquireLink(), self.enquire_link_timeout)
            except TimeoutError:
                log.warning("smpp gateway %s: enquire_link unanswered", self.config.name)
                link.lost()
                return
            except SmppConnectionLost:
                return

    async def _receipt_worker(self, link: _Link) -> None:
        """Commit receipts in batches via on_receipts, then answer their deliver_sm.

        The answer follows the commit so that a receipt the SMSC considers delivered is in our
        database; if on_receipts fails, ESME_RSYSERR makes the SMSC deliver it again. Each
        connection runs `receipt_concurrency` of these: a batch is whatever arrived while the
        workers were busy, up to `receipt_batch`, so batches grow with the load.
        """
        while True:
            batch = [await link.receipts.get()]
            while len(batch) < self.receipt_batch and not link.receipts.empty():
                batch.append(link.receipts.get_nowait())
            updates: list[ReceiptUpdate] = []
            answers: list[tuple[DeliverSm, bool]] = []  # (pdu, committed with the batch?)
            forget: list[str] = []
            for pdu in batch:
                verdict = self._translate(pdu)
                if verdict.defer_to is not None:
                    # No await since _translate looked: the message cannot have finished since.
                    verdict.defer_to.deferred.append((link, pdu))
                    continue
                answers.append((pdu, verdict.update is not None))
                if verdict.update is not None:
                    updates.append(verdict.update)
                if verdict.forget is not None:
                    forget.append(verdict.forget)
            status = ESME_ROK
            if updates:
                assert self._on_receipts is not None  # set by start(), which starts this task
                try:
                    await self._on_receipts(updates)
                except ReceiptsNotStored as exc:
                    log.debug(
                        "smpp gateway %s: %d receipts not stored (%s); the SMSC will resend them",
                        self.config.name,
                        len(updates),
                        exc,
                    )
                    status = ESME_RSYSERR
                except Exception:
                    log.exception(
                        "smpp gateway %s: storing %d receipts failed; the SMSC will resend them",
                        self.config.name,
                        len(updates),
                    )
                    status = ESME_RSYSERR
            if status == ESME_ROK:
                for part_id in forget:
                    self._parts.pop(part_id, None)
            # Only receipts we failed to store are refused; others would loop forever.
            data = b"".join(
                encode_response(DELIVER_SM_RESP, pdu.sequence_number, status if ok else ESME_ROK)
                for pdu, ok in answers
            )
            if not data:
                continue  # every one of them waits for its long message
            try:
                link.send_bytes(data)
                await link.writer.drain()
            except (SmppConnectionLost, OSError):
                return  # unacknowledged receipts come again after the reconnect

    def _translate(self, pdu: DeliverSm) -> _Verdict:
        """What to do with one deliver_sm: commit an update, just acknowledge it, or wait."""
        name = self.config.name
        if not is_delivery_receipt(pdu):
            log.debug("smpp gateway %s: ignoring a mobile-originated message", name)
            return _Verdict()
        try:
            receipt = parse_delivery_receipt(pdu)
        except ValueError as exc:
            # Refusing it would only make the SMSC send it again forever.
            log.warning("smpp gateway %s: dropping unreadable receipt: %s", name, exc)
            return _Verdict()
        if receipt.id_from_tlv:  # receipted_message_id is written like submit_sm_resp ids
            message_id = canonical_receipt_id(
                receipt.message_id, self.submit_id_base, self.receipt_id_base
            )
        else:
            message_id = canonical_receipt_id(
                receipt.message_id, self.receipt_id_base, self.submit_id_base
            )
        state = receipt.state
        provider_status = receipt.stat
        holder = self._parts.get(message_id)
        if holder is not None and not holder.done:
            return _Verdict(defer_to=holder)  # we do not know the message's id yet
        forget = message_id if holder is not None and state.is_final else None
        part_of = holder.message_id if holder is not None else None
        if part_of is not None:
            if state not in PART_FAILURE_STATES:
                return _Verdict(forget=forget)  # the last part's receipt speaks for the message
            provider_status = f"{receipt.stat} (part)"
        err = receipt.err
        failed = err is not None and err.strip("0") != "" and state != DeliveryState.DELIVERED
        raw = {
            "id": receipt.message_id,
            "stat": receipt.stat,
            "err": err,
            "submit_date": receipt.fields.get("submit date"),
            "done_date": receipt.fields.get("done date"),
            "source_addr": pdu.source_addr,
            "destination_addr": pdu.destination_addr,
        }
        if part_of is not None:
            raw["part_id"] = message_id
        update = ReceiptUpdate(
            gateway_message_id=part_of or message_id,
            phone=None,
            state=state,
            provider_status=provider_status,
            error=f"{receipt.stat} err:{err}" if failed else None,
            occurred_at=receipt.done_date,
            raw=raw,
        )
        log.debug("smpp gateway %s: receipt %s %s", name, message_id, receipt.stat)
        return _Verdict(update=update, forget=forget)

    # -- sending ---------------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """submit_sm for every message (every part of a long one), `window` at a time.

        One result per message, in order; raises `GatewayUnavailable` only when not bound at all.
        After the first throttling answer, messages not yet submitted are reported throttled
        without being sent: the SMSC asked us to slow down. Cancelled, it sends nothing more.
        """
        link = self._link
        if link is None or not link.usable:
            raise GatewayUnavailable(f"smpp gateway {self.config.name}: not bound")
        batch = _Batch(len(messages))
        singles: list[_Submit] = []
        for index, message in enumerate(messages):
            parts = self._submissions(message)
            if isinstance(parts, SendResult):
                batch.settle(index, parts)
            elif len(parts) == 1:
                done = functools.partial(self._settle, batch, index, message.delivery_id)
                singles.append(_Submit(parts[0], batch, done))
            else:
                task = asyncio.create_task(self._send_long(link, message, parts, batch, index))
                task.add_done_callback(batch.fail_on_error)
                batch.tasks.append(task)
        link.enqueue(singles)
        if batch.remaining:
            try:
                await batch.finished
            except asyncio.CancelledError:
                batch.cancelled = True  # what is still queued is never sent
                for task in batch.tasks:
                    task.cancel()
                raise
        results = [r for r in batch.results if r is not None]
        assert len(results) == len(messages)
        return results

    def _submissions(self, message: OutboundMessage) -> list[SubmitSm] | SendResult:
        """The submit_sm of a message, one per part; a SendResult if it cannot be sent."""
        destination = destination_for_phone(message.phone)
        if destination is None:
            return SendResult(message.delivery_id, False, error="invalid msisdn")
        self._ref = (self._ref + 1) % 256
        try:
            parts = split_message(message.text, self._ref)
        except MessageTooLong as exc:
            return SendResult(message.delivery_id, False, error=str(exc))
        ep = self.endpoint
        validity = absolute_time(message.expires_at) if message.expires_at else ""
        priority = PRIORITY_FLAGS.get(message.priority, 0)
        return [
            SubmitSm(
                source_addr_ton=ep.source_ton,
                source_addr_npi=ep.source_npi,
                source_addr=ep.source_addr,
                dest_addr_ton=TON_INTERNATIONAL,
                dest_addr_npi=NPI_ISDN,
                destination_addr=destination,
                esm_class=part.esm_class,
                priority_flag=priority,
                validity_period=validity,
                registered_delivery=self.registered_delivery,
                data_coding=part.data_coding,
                short_message=part.short_message,
            )
            for part in parts
        ]

    def _settle(
        self, batch: _Batch, index: int, delivery_id: int, outcome: Pdu | BaseException | None
    ) -> None:
        """A one-part message's outcome, as its result."""
        refused = self._refusal(delivery_id, outcome, batch)
        if refused is not None:
            batch.settle(index, refused)
            return
        assert isinstance(outcome, SubmitSmResp)
        batch.settle(index, self._accepted(delivery_id, outcome))

    def _refusal(
        self, delivery_id: int, outcome: Pdu | BaseException | None, batch: _Batch
    ) -> SendResult | None:
        """The failed result an outcome means, or None when the SMSC accepted the part."""
        if outcome is None:
            return self._throttled(delivery_id, ESME_RTHROTTLED)
        if isinstance(outcome, TimeoutError):
            return SendResult(delivery_id, False, error="smpp timeout", retryable=True)
        if isinstance(outcome, BaseException):
            return SendResult(delivery_id, False, error="smpp connection lost", retryable=True)
        status = outcome.command_status
        if status == ESME_ROK and isinstance(outcome, SubmitSmResp):
            return None
        # A long message may now be partly sent; a retry sends it whole again.
        error = f"smpp 0x{status:08X}"
        if status in THROTTLE_STATUSES:
            batch.throttled = True
            return self._throttled(delivery_id, status)
        if status in TRANSIENT_STATUSES or status == ESME_ROK:  # ROK generic_nack: odd
            return SendResult(delivery_id, False, error=error, retryable=True)
        log.debug("smpp submit refused: %s", status_name(status))
        return SendResult(delivery_id, False, error=error)

    def _accepted(self, delivery_id: int, resp: SubmitSmResp) -> SendResult:
        message_id = canonical_message_id(resp.message_id, self.submit_id_base)
        if not message_id:
            log.warning("smpp gateway %s: accepted without a message id", self.config.name)
        return SendResult(delivery_id, True, gateway_message_id=message_id or None)

    async def _send_long(
        self,
        link: _Link,
        message: OutboundMessage,
        parts: list[SubmitSm],
        batch: _Batch,
        index: int,
    ) -> None:
        """Submit a long message's parts one after another, each through the window.

        The message is identified by its LAST part: it is submitted last, so its acceptance
        means the SMSC holds the whole text, and its receipt is the last to be decided. The
        other parts' receipts are matched through `_parts` and forwarded only as failures.
        """
        delivery_id = message.delivery_id
        holder = _LongMessage()
        ids: list[str] = []
        loop = asyncio.get_running_loop()
        try:
            for number, pdu in enumerate(parts):
                # A non-last part's id is remembered as its response is read: its receipt may be
                # read right behind it, before this coroutine runs again.
                remember = None
                if number < len(parts) - 1:
                    remember = functools.partial(self._remember_response, holder)
                answer: asyncio.Future[Pdu | BaseException | None] = loop.create_future()
                done = functools.partial(_answer, answer)
                link.enqueue([_Submit(pdu, batch, done, first=not ids, on_response=remember)])
                outcome = await answer
                refused = self._refusal(delivery_id, outcome, batch)
                if refused is not None:
                    batch.settle(index, refused)
                    return
                assert isinstance(outcome, SubmitSmResp)
                ids.append(canonical_message_id(outcome.message_id, self.submit_id_base))
        finally:
            holder.finish(ids[-1] if len(ids) == len(parts) and ids[-1] else None)
        assert isinstance(outcome, SubmitSmResp)
        batch.settle(index, self._accepted(delivery_id, outcome))

    def _remember_response(self, holder: _LongMessage, resp: Pdu) -> None:
        if resp.command_status == ESME_ROK and isinstance(resp, SubmitSmResp):
            part_id = canonical_message_id(resp.message_id, self.submit_id_base)
            if part_id:
                self._remember_part(part_id, holder)

    def _remember_part(self, part_id: str, holder: _LongMessage) -> None:
        self._parts[part_id] = holder
        self._parts.move_to_end(part_id)
        while len(self._parts) > self.part_map_size:
            self._parts.popitem(last=False)

    def _throttled(self, delivery_id: int, status: int) -> SendResult:
        return SendResult(
            delivery_id,
            False,
            error=f"smpp 0x{status:08X}",
            retryable=True,
            retry_after=self.throttle_retry_after,
            throttled=True,
        )

    # -- callbacks -------------------------------------------------------------------------------

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[ReceiptUpdate]:
        """SMPP has no HTTP callbacks."""
        raise CallbackRejected("smpp receipts arrive over the SMPP connection", status=404)
