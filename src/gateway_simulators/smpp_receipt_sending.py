"""The SMSC simulator's delivery receipts: made when a part is accepted, held or delayed, sent
as deliver_sm on a connection bound to receive, `receipt_window` unanswered at most and many in
one write, and sent again when refused or unanswered. A part of `SmscSimulator` (smpp.py), which
holds the state.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import UTC, datetime

from gateway_adapters.smpp_codec import (
    SubmitSm,
)
from gateway_adapters.smpp_receipts import (
    receipt_time,
)
from gateway_simulators.common import (
    call_later_tracked,
)
from gateway_simulators.smpp_options import SmscOptions, SmscStats
from gateway_simulators.smpp_receipts import Receipt, receipt_frame
from gateway_simulators.smpp_session import Session

log = logging.getLogger(__name__)

SEND_CHUNK = 256  # deliver_sm per write at most; answers are read between chunks


class ReceiptSending:
    """Sending receipts as deliver_sm through the window (see the module)."""

    options: SmscOptions
    stats: SmscStats
    _sessions: set[Session]
    _ready: collections.deque[Receipt]
    _wake: asyncio.Event
    _held: list[Receipt]
    _timers: set[asyncio.TimerHandle]
    _unacked: int
    _bound: asyncio.Event
    _window: int
    _free: int

    # -- receipts --------------------------------------------------------------------------------

    def _schedule_receipt(
        self, pdu: SubmitSm, submit_id: str, text_id: str, stat: str, text: str
    ) -> None:
        try:
            receipt = Receipt(
                submit_id=submit_id,
                text_id=text_id,
                recipient=pdu.destination_addr,
                recipient_ton=pdu.dest_addr_ton,
                recipient_npi=pdu.dest_addr_npi,
                sender=pdu.source_addr,
                sender_ton=pdu.source_addr_ton,
                sender_npi=pdu.source_addr_npi,
                stat=stat,
                submitted=datetime.now(UTC),
                snippet="".join(c for c in text if c.isprintable())[:20],
            )
        except ValueError:  # an address a deliver_sm cannot carry back (too long, not Latin-1)
            log.debug("no receipt for %s: its addresses do not fit a deliver_sm", submit_id)
            return
        self._unacked += 1
        if self.options.hold_receipts:
            self._held.append(receipt)
            return
        # A timer rather than a sleeping task per receipt: cheap at benchmark volumes.
        delay = max(0.0, self.options.receipt_delay_ms / 1000)
        call_later_tracked(self._timers, delay, lambda: self._make_ready([receipt]))

    def _make_ready(self, receipts: list[Receipt]) -> None:
        if receipts:
            self._ready.extend(receipts)
            self._wake.set()

    async def _pump(self) -> None:
        """Send ready receipts as deliver_sm on a bound connection, `receipt_window` unanswered at
        most, up to SEND_CHUNK in one write."""
        loop = asyncio.get_running_loop()
        timeout = self.options.response_timeout_ms / 1000
        tlvs = self.options.receipt_tlvs  # every receipt with receipted_message_id, or none
        while True:
            if not self._ready or self._free <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            session = await self._bound_session()
            count = min(self._free, len(self._ready), SEND_CHUNK)
            if count <= 0:  # the state changed while we waited for a connection
                continue
            done_date = receipt_time(datetime.now(UTC))
            expires = loop.time() + timeout
            frames = []
            for _ in range(count):
                receipt = self._ready.popleft()
                receipt.attempts += 1
                sequence = session.next_sequence()
                session.receipts_out[sequence] = (receipt, expires)
                frames.append(receipt_frame(receipt, sequence, done_date, tlvs))
            self._free -= count
            self.stats.receipts_sent += count
            out = self._window - self._free
            self.stats.max_receipts_out = max(self.stats.max_receipts_out, out)
            session.writer.write(b"".join(frames))
            await asyncio.sleep(0)  # let the answers in between chunks

    def _settle(self, receipt: Receipt, acknowledged: bool) -> None:
        """A deliver_sm was answered: done with ESME_ROK, else sent again after a delay."""
        self._free += 1
        self._wake.set()
        if acknowledged:
            self.stats.receipts_acked += 1
            self._unacked -= 1
            return
        self.stats.receipts_refused += 1
        delay = self.options.redelivery_delay_ms / 1000
        call_later_tracked(self._timers, delay, lambda: self._make_ready([receipt]))

    async def _expire(self) -> None:
        """Send again the receipts whose deliver_sm went unanswered for `response_timeout_ms`."""
        loop = asyncio.get_running_loop()
        timeout = self.options.response_timeout_ms / 1000
        while True:
            await asyncio.sleep(min(max(timeout / 4, 0.005), 0.5))
            now = loop.time()
            for session in list(self._sessions):
                out = session.receipts_out
                # In sending order, so in order of expiry too: stop at the first still waiting.
                expired = []
                for sequence, (_, expires) in out.items():
                    if expires > now:
                        break
                    expired.append(sequence)
                receipts = [out.pop(sequence)[0] for sequence in expired]
                self.stats.receipts_unanswered += len(receipts)
                self._free += len(receipts)
                self._make_ready(receipts)

    async def _bound_session(self) -> Session:
        """A connection bound to receive deliver_sm (transceiver or receiver)."""
        while True:
            for session in self._sessions:
                if session.bound and session.role != "transmitter" and not session.closed:
                    return session
            self._bound.clear()
            await self._bound.wait()
