"""SMPP 3.4 adapter: a bind_transceiver connection (or a bind_transmitter and bind_receiver
pair) over asyncio streams, submit_sm with a window, delivery receipts as deliver_sm acknowledged
only after they are committed.

Configuration (`[[gateways]]` with `type = "smpp"`):
- `base_url = "smpp://host:port"` (port 2775 if omitted), `token = "system_id:password"`;
- `sender`: the source address; alphanumeric -> TON 5 / NPI 0, digits -> TON 1 / NPI 1;
- `timeout_seconds`: connect, bind and per-PDU response timeout.
- `window = N`: unacknowledged submit_sm in flight (the SMSC account's window; default 10).
- `bind_mode`: "transceiver" (default), or "transmitter_receiver": submit_sm go through a
  transmitter, receipts and inbound messages arrive on a receiver; each connection is kept up
  and bound again on its own (`_maintain`, one per role).

The other SMPP options (keepalive, reconnect backoff, message id bases, registered_delivery,
receipt batching, the gateway's own receipt status words) are class attributes listed in
`SmppAdapter.options`; each can be set in the gateway's entry, or by a keyword argument to the
constructor. How receipts are read (texts, dates, status words) is in `smpp_receipts`.

Receipts: `receipt_concurrency` workers per connection each take what arrived (up to
`receipt_batch`), commit it through on_receipts and only then answer those deliver_sm; while one
batch commits, the next is read and committed beside it. The SMSC's window for deliver_sm bounds
how many are in our hands at once, so it bounds the batches too: the receipt rate is about that
window divided by the time from the SMSC's send to our answer.

Ids: SMSCs write a message's id in submit_sm_resp and in the receipt in different bases, cases and
paddings. A delivery is stored under `smpp_ids.message_key` of its submit_sm_resp id (the id as
written, lower case, without leading zeros); a receipt finds it through receipted_message_id, or
through its text id read in the gateway's id style: `submit_id_base` and `receipt_id_base` when
configured (in the spirit of Kannel's msg-id-type), else learned from the first receipts that only
one reading explains, and then kept (`smpp_inbound` has how; a receipt is never placed by a guess).

Inbound messages (a deliver_sm that is not a receipt) are decoded, reassembled from their parts
(UDH or sar_*), handed to the receipt sink's `inbound` and answered once it returned, so the
SMSC sends them again if they were not committed (`smpp_mo`).

Receipts carry `phone=None`: an SMPP message id names one recipient's message on its own, and
SMSCs differ in how they write the receipt's source_addr.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from gateway_adapters.base import (
    AdapterLimits,
    CallbackRejected,
    GatewayConfig,
    GatewayMisconfigured,
    GatewayUnavailable,
    InboundMessage,
    OptionTypes,
    OutboundMessage,
    ReceiptSink,
    ReceiptUpdate,
    SendResult,
)
from gateway_adapters.smpp_codec import (
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    NPI_ISDN,
    NPI_UNKNOWN,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    Bind,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    FrameReader,
    GenericNack,
    Pdu,
    PduError,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    absolute_time,
    decode,
    status_name,
)
from gateway_adapters.smpp_ids import (
    message_key,
)
from gateway_adapters.smpp_inbound import Inbound, LongMessage
from gateway_adapters.smpp_link import Batch, Link, SmppConnectionLost, Submit, deliver_outcome
from gateway_adapters.smpp_receipts import status_words as receipt_status_words
from gateway_adapters.smpp_text import (
    MessageTooLong,
    split_message,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 2775
# Answers that mean "slow down": not the message's fault, no attempt should be charged for them.
THROTTLE_STATUSES = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
# Answers that mean "this time, not this message": try again later.
TRANSIENT_STATUSES = frozenset({ESME_RSYSERR, ESME_RX_T_APPN, ESME_RINVBNDSTS})
# bind_mode -> the connections' roles: submit_sm go through the first, deliver_sm arrive on the
# last (a transceiver does both).
BIND_MODES: dict[str, tuple[str, ...]] = {
    "transceiver": ("transceiver",),
    "transmitter_receiver": ("transmitter", "receiver"),
}
BIND_PDUS: dict[str, type[Bind]] = {
    "transceiver": BindTransceiver,
    "transmitter": BindTransmitter,
    "receiver": BindReceiver,
}
PRIORITY_FLAGS = {"emergency": 3, "high": 2}  # GSM treats any non-zero flag as "priority"


class SmppConfigError(GatewayMisconfigured, ValueError):
    """The `[[gateways]]` entry cannot describe an SMPP connection."""


class SmppBindRejected(Exception):
    """The SMSC answered a bind with an error status."""

    def __init__(self, role: str, status: int) -> None:
        super().__init__(f"bind_{role} refused: {status_name(status)}")
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


class SmppAdapter:
    """`GatewayAdapter` for an SMSC speaking SMPP 3.4 (bind_transceiver)."""

    type: ClassVar[str] = "smpp"
    # One recipient per submit_sm, over one bound connection; the operator sets the rate.
    limits: ClassVar[AdapterLimits] = AdapterLimits(1, None, None)
    # Every option below can be set in the gateway's `[[gateways]]` entry or, for tests, by a
    # keyword argument to the constructor (which wins).
    options: ClassVar[OptionTypes] = {
        "window": int,
        "bind_mode": str,
        "enquire_link_interval": float,
        "enquire_link_timeout": float,
        "reconnect_initial": float,
        "reconnect_max": float,
        "submit_id_base": int,
        "receipt_id_base": int,
        "registered_delivery": int,
        "receipt_batch": int,
        "receipt_concurrency": int,
        "status_words": dict[str, str],
        "mo_country_code": str,
        "mo_part_seconds": float,
    }

    # Defaults of the SMPP options (see the module docstring for why they are not in the file).
    window: int = 10  # unacknowledged submit_sm in flight on the connection
    # "transceiver": one connection; "transmitter_receiver": submit_sm on a bind_transmitter,
    # receipts and inbound messages on a bind_receiver, each re-bound on its own.
    bind_mode: str = "transceiver"
    enquire_link_interval: float = 30.0
    enquire_link_timeout: float = 10.0
    reconnect_initial: float = 0.5  # doubled after each failed attempt ...
    reconnect_max: float = 30.0  # ... up to this
    # How the SMSC writes ids in submit_sm_resp and in receipt texts (10, 16, or 0 for opaque ids
    # compared as written): the gateway's id style (smpp_ids). Unset, it is learned.
    submit_id_base: int | None = None
    receipt_id_base: int | None = None
    registered_delivery: int = 1  # final receipts, success and failure
    unbind_timeout: float = 1.0
    throttle_retry_after: float = 1.0
    receipt_batch: int = 500  # receipts committed together at most (one on_receipts call)
    # on_receipts calls in flight at once: while one batch commits, the next is read and
    # committed beside it (each answered after its own commit).
    receipt_concurrency: int = 3
    part_map_size: int = 100_000  # ids of non-last parts of long messages we still recognise
    # The gateway's own receipt status words beyond smpp_receipts.STATUS_WORDS, as a TOML table:
    # status_words = { DND_REJECTED = "failed", SUBMITD = "sent" }
    status_words: Mapping[str, str] = {}
    # Inbound messages (smpp_mo): the country code a national (TON 2) sender is in, and how long
    # the parts of a concatenated one are waited for before it is passed on with what came.
    mo_country_code: str = "45"
    mo_part_seconds: float = 60.0

    def __init__(
        self,
        config: GatewayConfig,
        callback_url: str,
        session: Any = None,  # the HTTP session other adapters share; SMPP has no use for it
        *,
        window: int | None = None,
        bind_mode: str | None = None,
        enquire_link_interval: float | None = None,
        enquire_link_timeout: float | None = None,
        reconnect_initial: float | None = None,
        reconnect_max: float | None = None,
        submit_id_base: int | None = None,
        receipt_id_base: int | None = None,
        registered_delivery: int | None = None,
        receipt_batch: int | None = None,
        receipt_concurrency: int | None = None,
        status_words: Mapping[str, str] | None = None,
        mo_country_code: str | None = None,
        mo_part_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.callback_url = callback_url
        self.endpoint = parse_config(config)
        overrides: Mapping[str, Any] = {
            "window": window,
            "bind_mode": bind_mode,
            "enquire_link_interval": enquire_link_interval,
            "enquire_link_timeout": enquire_link_timeout,
            "reconnect_initial": reconnect_initial,
            "reconnect_max": reconnect_max,
            "submit_id_base": submit_id_base,
            "receipt_id_base": receipt_id_base,
            "registered_delivery": registered_delivery,
            "receipt_batch": receipt_batch,
            "receipt_concurrency": receipt_concurrency,
            "status_words": status_words,
            "mo_country_code": mo_country_code,
            "mo_part_seconds": mo_part_seconds,
        }
        for name, value in overrides.items():
            if value is None:
                value = config.extra.get(name)
            if value is not None:
                setattr(self, name, value)
        for name in ("submit_id_base", "receipt_id_base"):
            if getattr(self, name) not in (None, 0, 10, 16):
                raise SmppConfigError(f"gateway {config.name!r}: {name} must be 0, 10 or 16")
        try:
            words = receipt_status_words(self.status_words)
        except ValueError as exc:
            raise SmppConfigError(f"gateway {config.name!r}: {exc}") from None
        if not 1 <= self.window <= 10_000:
            raise SmppConfigError(f"gateway {config.name!r}: window must be 1 to 10000")
        if self.bind_mode not in BIND_MODES:
            modes = " or ".join(repr(m) for m in BIND_MODES)
            raise SmppConfigError(f"gateway {config.name!r}: bind_mode must be {modes}")
        # The connections' roles, the one submit_sm go through first, the receiving one last.
        self._roles = BIND_MODES[self.bind_mode]
        self._links: dict[str, Link] = {}  # role -> its bound connection
        self._runners: list[asyncio.Task[None]] = []
        self._closing = False
        self._ref = 0
        self._inbound = Inbound(
            config.name,
            receipt_batch=self.receipt_batch,
            part_map_size=self.part_map_size,
            submit_id_base=self.submit_id_base,
            receipt_id_base=self.receipt_id_base,
            words=words,
            mo_country_code=self.mo_country_code,
            mo_part_seconds=self.mo_part_seconds,
        )

    @property
    def max_batch(self) -> int:
        return max(1, self.config.max_batch)

    @property
    def bound(self) -> bool:
        """Whether the connection submit_sm go through is bound (transceiver or transmitter)."""
        link = self._links.get(self._roles[0])
        return link is not None and link.usable

    @property
    def receiving(self) -> bool:
        """Whether the connection deliver_sm arrive on is bound (transceiver or receiver)."""
        link = self._links.get(self._roles[-1])
        return link is not None and link.usable

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, on_receipts: ReceiptSink) -> None:
        """Connect and bind (each connection of the bind mode), then keep them up in the
        background, each re-bound on its own when it drops.

        Raises `GatewayMisconfigured` if the SMSC refuses a first bind (wrong credentials want
        an operator). If the SMSC is unreachable it only logs: reconnection goes on with backoff,
        and `send_batch` raises `GatewayUnavailable` until bound.
        """
        if self._runners:
            return
        self._inbound.on_receipts = on_receipts
        # The service may offer a lookup of the ids it sent through this gateway (base.py).
        self._inbound.known_ids = getattr(on_receipts, "known_message_ids", None)
        # ... and take the inbound messages (base.InboundSink); else they are answered and dropped.
        self._inbound.on_inbound = getattr(on_receipts, "inbound", None)
        self._closing = False
        loop = asyncio.get_running_loop()
        firsts: list[asyncio.Future[None]] = []
        for role in self._roles:
            first: asyncio.Future[None] = loop.create_future()
            firsts.append(first)
            name = f"smpp-{self.config.name}-{role}"
            self._runners.append(asyncio.create_task(self._maintain(role, first), name=name))
        name = f"smpp-{self.config.name}-mo"
        self._runners.append(asyncio.create_task(self._inbound.sweep_parts(), name=name))
        try:
            await asyncio.shield(asyncio.gather(*firsts))
        except GatewayMisconfigured:
            await self._stop_runners()
            raise

    async def close(self) -> None:
        """Unbind (waiting briefly for unbind_resp), close the sockets and stop every task.

        Receipts not yet committed stay unacknowledged, so the SMSC delivers them again later.
        """
        self._closing = True
        await self._stop_runners()
        links, self._links = list(self._links.values()), {}
        for link in links:
            if link.usable:
                with contextlib.suppress(SmppConnectionLost, TimeoutError):
                    await link.request(Unbind(), self.unbind_timeout)
            await link.stop()

    async def _stop_runners(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _maintain(self, role: str, first: asyncio.Future[None]) -> None:
        """Connect, bind as `role`, wait for the connection to drop, back off, repeat."""
        delay = self.reconnect_initial
        name = self.config.name
        while True:
            try:
                link = await self._connect(role)
            except SmppBindRejected as exc:
                if not first.done():
                    first.set_exception(GatewayMisconfigured(f"smpp gateway {name}: {exc}"))
                    return
                log.error("smpp gateway %s: %s; retrying in %.1f s", name, exc, delay)
            except (OSError, TimeoutError, PduError, SmppConnectionLost) as exc:
                log.warning(
                    "smpp gateway %s: cannot connect the %s (%s: %s); retrying in %.1f s",
                    name,
                    role,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            else:
                delay = self.reconnect_initial
                self._links[role] = link
                log.info("smpp gateway %s: bound as %s", name, role)
                if not first.done():
                    first.set_result(None)
                try:
                    await link.closed.wait()
                finally:
                    # On cancellation (close) the link is close()'s to unbind; else it is dead.
                    if not self._closing:
                        if self._links.get(role) is link:
                            del self._links[role]
                        await link.stop()
                log.warning("smpp gateway %s: %s connection lost; reconnecting", name, role)
            if not first.done():
                first.set_result(None)  # unreachable at start: go on trying in the background
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _connect(self, role: str) -> Link:
        ep = self.endpoint
        timeout = self.config.timeout_seconds
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), timeout)
        link = Link(reader, writer, self.window, timeout)
        link.tasks.append(asyncio.create_task(self._read_loop(link)))
        try:
            bind = BIND_PDUS[role](system_id=ep.system_id, password=ep.password)
            resp = await link.request(bind, timeout)
            if resp.command_status != ESME_ROK:
                raise SmppBindRejected(role, resp.command_status)
            link.bound = True
            link.tasks.append(asyncio.create_task(self._keepalive(link)))
            # On every connection, though an SMSC sends deliver_sm to a transmitter only by
            # mistake: answered all the same, they do not wait there for ever.
            for _ in range(max(1, self.receipt_concurrency)):
                link.tasks.append(asyncio.create_task(self._inbound.worker(link)))
        except BaseException:
            await link.stop()
            raise
        return link

    # -- the connection's tasks ------------------------------------------------------------------

    async def _read_loop(self, link: Link) -> None:
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

    def _route(self, link: Link, frame: bytes) -> bool:
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

    async def _keepalive(self, link: Link) -> None:
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

    # -- sending ---------------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """submit_sm for every message (every part of a long one), `window` at a time.

        One result per message, in order; raises `GatewayUnavailable` only when not bound at all.
        After the first throttling answer, messages not yet submitted are reported throttled
        without being sent: the SMSC asked us to slow down. Cancelled, it sends nothing more.
        """
        link = self._links.get(self._roles[0])
        if link is None or not link.usable:
            raise GatewayUnavailable(
                f"smpp gateway {self.config.name}: not bound", maybe_taken=False
            )
        batch = Batch(len(messages))
        singles: list[Submit] = []
        for index, message in enumerate(messages):
            parts = self._submissions(message)
            if isinstance(parts, SendResult):
                batch.settle(index, parts)
            elif len(parts) == 1:
                done = functools.partial(self._settle, batch, index, message.delivery_id)
                singles.append(Submit(parts[0], batch, done))
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
        self, batch: Batch, index: int, delivery_id: int, outcome: Pdu | BaseException | None
    ) -> None:
        """A one-part message's outcome, as its result."""
        refused = self._refusal(delivery_id, outcome, batch)
        if refused is not None:
            batch.settle(index, refused)
            return
        assert isinstance(outcome, SubmitSmResp)
        batch.settle(index, self._accepted(delivery_id, outcome))

    def _refusal(
        self, delivery_id: int, outcome: Pdu | BaseException | None, batch: Batch
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
        message_id = self._inbound.submitted(resp.message_id)
        if not message_id:
            log.warning("smpp gateway %s: accepted without a message id", self.config.name)
        return SendResult(delivery_id, True, gateway_message_id=message_id or None)

    async def _send_long(
        self,
        link: Link,
        message: OutboundMessage,
        parts: list[SubmitSm],
        batch: Batch,
        index: int,
    ) -> None:
        """Submit a long message's parts one after another, each through the window.

        The message is identified by its LAST part: it is submitted last, so its acceptance
        means the SMSC holds the whole text, and its receipt is the last to be decided. The
        other parts' receipts are matched through `Inbound.parts` and forwarded only as failures.
        """
        delivery_id = message.delivery_id
        holder = LongMessage()
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
                done = functools.partial(deliver_outcome, answer)
                link.enqueue([Submit(pdu, batch, done, first=not ids, on_response=remember)])
                outcome = await answer
                refused = self._refusal(delivery_id, outcome, batch)
                if refused is not None:
                    batch.settle(index, refused)
                    return
                assert isinstance(outcome, SubmitSmResp)
                ids.append(message_key(outcome.message_id))
        finally:
            holder.finish(ids[-1] if len(ids) == len(parts) and ids[-1] else None)
        assert isinstance(outcome, SubmitSmResp)
        batch.settle(index, self._accepted(delivery_id, outcome))

    def _remember_response(self, holder: LongMessage, resp: Pdu) -> None:
        if resp.command_status == ESME_ROK and isinstance(resp, SubmitSmResp):
            part_id = self._inbound.submitted(resp.message_id)
            if part_id:
                self._inbound.remember_part(part_id, holder)

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

    def parse_inbound(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[InboundMessage]:
        """SMPP's inbound messages arrive as deliver_sm (smpp_mo), not over HTTP."""
        raise CallbackRejected("smpp inbound messages arrive over the SMPP connection", status=404)

    def inbound_reply(self, stored: int) -> tuple[str, bytes]:
        return "application/json", b'{"received":%d}' % stored
