"""What the SMPP adapter does with the deliver_sm it receives: receipts become updates, committed
through on_receipts and only then answered; mobile-originated messages (a citizen's SMS) are
decoded and reassembled (smpp_mo), handed to the receipt sink's `inbound` and answered once it
returned (committed), or at once when the sink has no `inbound`.

A receipt is matched by its message id's key (see smpp_ids). While the gateway's id style is not
settled, a receipt text id that could be read more than one way is looked up among the ids this
adapter was given in submit_sm_resp lately (they may not be written yet) and, if the service
offers it (`known_message_ids` on the receipt sink), among every delivery sent through the
gateway (by any process, before any restart). The one reading that names a message of ours is
its key, and counts as evidence for the style. A receipt none or several of whose readings name
one of ours is answered ESME_RX_T_APPN (a temporary error), so the SMSC delivers it again later:
by then the style is settled, or its message written. A receipt is never matched under a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from gateway_adapters.base import (
    DeliveryState,
    InboundSink,
    MessageIdLookup,
    ReceiptSink,
    ReceiptsNotStored,
    ReceiptUpdate,
)
from gateway_adapters.smpp_codec import (
    DELIVER_SM_RESP,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RX_T_APPN,
    DeliverSm,
    encode_response,
)
from gateway_adapters.smpp_ids import IdStyle, Style, describe, message_key, resolve
from gateway_adapters.smpp_link import Link, SmppConnectionLost
from gateway_adapters.smpp_mo import Mo, MobileOriginated
from gateway_adapters.smpp_receipts import (
    STATUS_WORDS,
    DeliveryReceipt,
    is_delivery_receipt,
    parse_delivery_receipt,
)

log = logging.getLogger(__name__)

# Receipts a part of a long message that are worth forwarding under the message's id: one failed
# part means the recipient did not get the whole text.
PART_FAILURE_STATES = frozenset({DeliveryState.FAILED, DeliveryState.EXPIRED})


class LongMessage:
    """A long message being (or having been) submitted, for matching its parts' receipts."""

    __slots__ = ("deferred", "done", "message_id")

    def __init__(self) -> None:
        self.message_id: str | None = None  # the last part's id, once every part is accepted
        self.done = False
        # Receipts of its parts that arrived before its last part was accepted: answered later.
        self.deferred: list[tuple[Link, DeliverSm]] = []

    def finish(self, message_id: str | None) -> None:
        """Submission is over (`message_id` None if it failed): look at deferred receipts again."""
        self.message_id, self.done = message_id, True
        deferred, self.deferred = self.deferred, []
        for link, pdu in deferred:
            if not link.closed.is_set():  # else the SMSC sends it again after the reconnect
                link.receipts.put_nowait(pdu)


@dataclass(slots=True)
class Verdict:
    """What the receipt worker does with one deliver_sm."""

    update: ReceiptUpdate | None = None  # commit this, then answer
    forget: str | None = None  # part id to drop from the part map once committed
    defer_to: LongMessage | None = None  # answer later: its message is still being submitted


@dataclass(slots=True)
class _Read:
    """A deliver_sm read: its receipt (None for other deliver_sm, or an unreadable receipt) and
    its key, or the keys it may have while that is open."""

    pdu: DeliverSm
    receipt: DeliveryReceipt | None = None
    key: str | None = None
    candidates: dict[str, frozenset[Style]] | None = None
    mobile_originated: bool = False


class Inbound:
    """One gateway's deliver_sm handling, shared by its connections."""

    def __init__(
        self,
        gateway: str,
        *,
        receipt_batch: int,
        part_map_size: int,
        submit_id_base: int | None,
        receipt_id_base: int | None,
        words: Mapping[str, DeliveryState] = STATUS_WORDS,
        mo_country_code: str = "45",
        mo_part_seconds: float = 60.0,
    ) -> None:
        self.gateway = gateway
        self.mo = MobileOriginated(
            gateway, country_code=mo_country_code, part_seconds=mo_part_seconds
        )
        self.on_inbound: InboundSink | None = None
        self.receipt_batch = receipt_batch
        self.part_map_size = part_map_size
        self.style = IdStyle(submit_id_base, receipt_id_base)
        self.on_receipts: ReceiptSink | None = None
        self.known_ids: MessageIdLookup | None = None
        self.words = words  # status word -> state (smpp_receipts.status_words)
        self.unknown_words: set[str] = set()  # logged already
        # key of a non-last part of a long message -> that message
        self.parts: OrderedDict[str, LongMessage] = OrderedDict()
        # Keys of the ids submit_sm_resp gave us lately, while the id style is not settled
        # (an OrderedDict: a dict's oldest key is slow to find once many were deleted).
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.refused = 0  # receipts answered ESME_RX_T_APPN: their id could not be placed yet
        # Receipts naming their message both ways teach the style for free, but an SMSC whose
        # text id is some other number never does: stop trying after this many.
        self.observations_left = 1000

    def submitted(self, raw: str) -> str:
        """The key of an id from submit_sm_resp; remembered while the id style is open."""
        key = message_key(raw)
        if not self.style.settled and key:
            self._settled(self.style.saw_submit_id(raw), "a submit_sm_resp id")
            recent = self.recent
            recent[key] = None
            if len(recent) > self.part_map_size:
                recent.popitem(last=False)
        return key

    def remember_part(self, part_id: str, holder: LongMessage) -> None:
        self.parts[part_id] = holder
        self.parts.move_to_end(part_id)
        while len(self.parts) > self.part_map_size:
            self.parts.popitem(last=False)

    async def worker(self, link: Link) -> None:
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
            reads = [self.read(pdu) for pdu in batch]
            if any(r.candidates is not None for r in reads):
                await self._place(reads)
            updates: list[ReceiptUpdate] = []
            answers: list[tuple[DeliverSm, int | None]] = []  # (pdu, status; None: the batch's)
            forget: list[str] = []
            for read in reads:
                if read.mobile_originated:
                    continue  # below
                if read.receipt is not None and read.key is None:
                    answers.append((read.pdu, ESME_RX_T_APPN))  # its id is not placed yet
                    self.refused += 1
                    continue
                verdict = self.translate(read)
                if verdict.defer_to is not None:
                    # No await since translate looked: the message cannot have finished since.
                    verdict.defer_to.deferred.append((link, read.pdu))
                    continue
                answers.append((read.pdu, None if verdict.update is not None else ESME_ROK))
                if verdict.update is not None:
                    updates.append(verdict.update)
                if verdict.forget is not None:
                    forget.append(verdict.forget)
            mos: list[Mo] = []
            for read in reads:
                if read.mobile_originated:
                    done, now = self.mo.read(link, read.pdu)
                    mos += done
                    if now is not None:
                        answers.append((read.pdu, now))
            status = ESME_ROK
            if updates:
                assert self.on_receipts is not None  # set by start(), which starts this task
                try:
                    await self.on_receipts(updates)
                except ReceiptsNotStored as exc:
                    log.debug(
                        "smpp gateway %s: %d receipts not stored (%s); the SMSC will resend them",
                        self.gateway,
                        len(updates),
                        exc,
                    )
                    status = ESME_RSYSERR
                except Exception:
                    log.exception(
                        "smpp gateway %s: storing %d receipts failed; the SMSC will resend them",
                        self.gateway,
                        len(updates),
                    )
                    status = ESME_RSYSERR
            if status == ESME_ROK:
                for part_id in forget:
                    self.parts.pop(part_id, None)
            if mos:
                answers += await self.hand_on(mos, link)
            # Only receipts we failed to store are refused; others would loop forever.
            data = b"".join(
                encode_response(
                    DELIVER_SM_RESP, pdu.sequence_number, status if own is None else own
                )
                for pdu, own in answers
            )
            if not data:
                continue  # every one of them waits for its long message
            try:
                link.send_bytes(data)
                await link.writer.drain()
            except (SmppConnectionLost, OSError):
                return  # unacknowledged receipts come again after the reconnect

    async def hand_on(self, mos: list[Mo], link: Link | None) -> list[tuple[DeliverSm, int]]:
        """Commit whole inbound messages through the sink's `inbound`, then answer their
        deliver_sm: ESME_ROK once committed, ESME_RSYSERR if not (the SMSC sends them again).
        Returns the answers due on `link`; those of parts that came on another connection are
        sent there (or not at all, if it is gone: the SMSC sends them again)."""
        status = ESME_ROK
        if self.on_inbound is not None:
            try:
                await self.on_inbound([mo.message for mo in mos])
            except ReceiptsNotStored:
                status = ESME_RSYSERR  # reported by the sink
            except Exception as exc:
                # The type only: a database error's text may quote the number or the message.
                log.error(
                    "smpp gateway %s: storing %d inbound messages failed (%s); the SMSC will "
                    "send them again",
                    self.gateway,
                    len(mos),
                    type(exc).__name__,
                )
                log.debug("inbound failure", exc_info=True)
                status = ESME_RSYSERR
        else:
            log.debug("smpp gateway %s: no inbound sink; messages dropped", self.gateway)
        self.mo.finished(mos, committed=status == ESME_ROK)
        here: list[tuple[DeliverSm, int]] = []
        for mo in mos:
            for part in mo.parts:
                if part.link is link:
                    here.append((part.pdu, status))
                    continue
                other = part.link
                assert isinstance(other, Link)
                if not other.closed.is_set():
                    with contextlib.suppress(SmppConnectionLost, OSError):
                        other.send_bytes(
                            encode_response(DELIVER_SM_RESP, part.pdu.sequence_number, status)
                        )
        return here

    async def sweep_parts(self, interval: float = 1.0) -> None:
        """Hand on, with what they have, the inbound messages whose parts stopped arriving."""
        while True:
            await asyncio.sleep(interval)
            mos = self.mo.expired()
            if mos:
                await self.hand_on(mos, None)

    def read(self, pdu: DeliverSm) -> _Read:
        """Read one deliver_sm and its message id's key, where that needs no lookup."""
        if not is_delivery_receipt(pdu):
            return _Read(pdu, mobile_originated=True)
        try:
            receipt = parse_delivery_receipt(pdu)
        except ValueError as exc:
            # Refusing it would only make the SMSC send it again forever.
            log.warning("smpp gateway %s: dropping unreadable receipt: %s", self.gateway, exc)
            return _Read(pdu)
        style = self.style
        if receipt.tlv_id:  # receipted_message_id is written like submit_sm_resp ids
            key = message_key(receipt.tlv_id)
            if not style.settled and receipt.text_id and self.observations_left:
                self.observations_left -= 1
                self._settled(style.observe(receipt.text_id, key), "receipts naming ids twice")
            return _Read(pdu, receipt, key)
        text_id = receipt.text_id
        if not style.settled:
            self._settled(style.saw_receipt_id(text_id), "a receipt's text id")
        if style.settled:
            return _Read(pdu, receipt, style.key(text_id))
        candidates = style.candidates(text_id)
        if len(candidates) == 1:
            return _Read(pdu, receipt, next(iter(candidates)))
        return _Read(pdu, receipt, None, candidates)  # looked up in `_place`

    async def _place(self, reads: list[_Read]) -> None:
        """Find the keys of receipts that could be read several ways: the one reading that
        names a message of ours, among the ids submit_sm_resp gave this adapter lately and the
        deliveries the service knows (every process's). Those still open stay without a key
        (answered with a temporary error); all of them if the service could not be asked."""
        open_reads = [r for r in reads if r.candidates is not None]
        wanted = {key for r in open_reads for key in r.candidates or ()}
        known = {key for key in wanted if key in self.recent}
        if self.known_ids is not None:
            try:
                known.update(await self.known_ids(sorted(wanted)))
            except Exception as exc:
                log.warning("smpp gateway %s: looking message ids up failed: %r", self.gateway, exc)
                known.clear()  # ours alone could hide another process's message
        for read in open_reads:
            assert read.candidates is not None and read.receipt is not None
            if self.style.settled:  # by an earlier receipt of this batch: the style decides
                read.key = self.style.key(read.receipt.text_id)
                continue
            hit = resolve(read.candidates, (k for k in read.candidates if k in known))
            if hit is not None:
                read.key = hit[0]
                self._settled(self.style.confirm(hit[1]), "receipts of messages we sent")
        unplaced = sum(1 for r in open_reads if r.key is None)
        if unplaced:
            log.info(
                "smpp gateway %s: %d receipts name no message of ours in one reading only; "
                "answered with a temporary error until the id style is known",
                self.gateway,
                unplaced,
            )

    def _settled(self, now: bool, how: str) -> None:
        """Log the id style once it is settled, and forget what served to learn it."""
        if not now:
            return
        self.recent.clear()
        style = self.style.learned
        assert style is not None
        log.info(
            "smpp gateway %s: message ids are read as %s (learned from %s); to fix it, set "
            "submit_id_base = %d and receipt_id_base = %d",
            self.gateway,
            describe(style),
            how,
            style[0],
            style[1],
        )

    def translate(self, read: _Read) -> Verdict:
        """What to do with one deliver_sm whose key is known: commit an update, just
        acknowledge it, or wait."""
        receipt, message_id, pdu = read.receipt, read.key, read.pdu
        if receipt is None or message_id is None:
            return Verdict()
        state, provider_status, error = self.status(receipt)
        holder = self.parts.get(message_id)
        if holder is not None and not holder.done:
            return Verdict(defer_to=holder)  # we do not know the message's id yet
        forget = message_id if holder is not None and state.is_final else None
        part_of = holder.message_id if holder is not None else None
        if part_of is not None:
            if state not in PART_FAILURE_STATES:
                return Verdict(forget=forget)  # the last part's receipt speaks for the message
            provider_status = f"{provider_status} (part)"
        raw: dict[str, object] = {
            "id": receipt.text_id or None,
            "stat": receipt.stat or None,
            "err": receipt.err,
            "submit_date": receipt.fields.get("submit date"),
            "done_date": receipt.fields.get("done date"),
            "source_addr": pdu.source_addr,
            "destination_addr": pdu.destination_addr,
        }
        if receipt.tlv_id:
            raw["receipted_message_id"] = receipt.tlv_id
        if receipt.message_state is not None:
            raw["message_state"] = receipt.message_state
        if part_of is not None:
            raw["part_id"] = message_id
        update = ReceiptUpdate(
            gateway_message_id=part_of or message_id,
            phone=None,
            state=state,
            provider_status=provider_status,
            error=error,
            occurred_at=receipt.done_date,
            raw=raw,
        )
        log.debug("smpp gateway %s: receipt %s %s", self.gateway, message_id, provider_status)
        return Verdict(update=update, forget=forget)

    def status(self, receipt: DeliveryReceipt) -> tuple[DeliveryState, str, str | None]:
        """The receipt's state, provider status and error. A status no word maps ends the
        delivery as failed, naming the status (see smpp_receipts); logged once per word."""
        err = receipt.err
        word = receipt.stat
        if not word and receipt.message_state is not None:
            word = f"message_state {receipt.message_state}"
        state = self.words.get(receipt.stat) if receipt.stat else None
        if state is None:
            if word not in self.unknown_words:
                self.unknown_words.add(word)
                log.warning(
                    "smpp gateway %s: receipt status %r is not known; such deliveries end as "
                    "failed (map it with status_words in the gateway's settings)",
                    self.gateway,
                    word,
                )
            error = f"unknown receipt status {word!r}" if word else "receipt without a status"
            return DeliveryState.FAILED, word, error + (f" err:{err}" if err else "")
        failed = err is not None and err.strip("0") != "" and state != DeliveryState.DELIVERED
        return state, word, f"{word} err:{err}" if failed else None
