"""The SMPP adapter's connections: each role of the bind mode (a transceiver, or a transmitter
and a receiver) connected, bound and kept up on its own, with backoff; every incoming PDU routed
(responses to their requests, deliver_sm to the receipt workers of `smpp_inbound`, enquire_link
and unbind answered); enquire_link sent while idle. A part of `SmppAdapter` (smpp.py), which
holds the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway_adapters.base import (
    GatewayConfig,
    GatewayMisconfigured,
    ReceiptSink,
)
from gateway_adapters.smpp_codec import (
    ESME_RINVCMDID,
    ESME_ROK,
    Bind,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    FrameReader,
    GenericNack,
    PduError,
    Unbind,
    UnbindResp,
    decode,
    status_name,
)
from gateway_adapters.smpp_config import Endpoint
from gateway_adapters.smpp_inbound import Inbound
from gateway_adapters.smpp_link import Link, SmppConnectionLost

log = logging.getLogger(__name__)

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


class SmppBindRejected(Exception):
    """The SMSC answered a bind with an error status."""

    def __init__(self, role: str, status: int) -> None:
        super().__init__(f"bind_{role} refused: {status_name(status)}")
        self.status = status


class SmppConnections:
    """Connecting, binding and keeping up the adapter's connections (see the module)."""

    config: GatewayConfig
    endpoint: Endpoint
    window: int
    enquire_link_interval: float
    enquire_link_timeout: float
    reconnect_initial: float
    reconnect_max: float
    unbind_timeout: float
    receipt_concurrency: int
    _roles: tuple[str, ...]
    _links: dict[str, Link]
    _runners: list[asyncio.Task[None]]
    _closing: bool
    _inbound: Inbound

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
