"""What the SMPP adapter does with the deliver_sm it receives: receipts become updates, committed
through on_receipts and only then answered; other deliver_sm are answered at once."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from gateway_adapters.base import DeliveryState, ReceiptSink, ReceiptUpdate
from gateway_adapters.smpp_codec import (
    DELIVER_SM_RESP,
    ESME_ROK,
    ESME_RSYSERR,
    DeliverSm,
    encode_response,
)
from gateway_adapters.smpp_ids import canonical_receipt_id
from gateway_adapters.smpp_link import Link, SmppConnectionLost
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


class Inbound:
    """One gateway's deliver_sm handling, shared by its connections."""

    def __init__(
        self,
        gateway: str,
        *,
        receipt_batch: int,
        part_map_size: int,
        submit_id_base: int,
        receipt_id_base: int,
        words: Mapping[str, DeliveryState] = STATUS_WORDS,
    ) -> None:
        self.gateway = gateway
        self.receipt_batch = receipt_batch
        self.part_map_size = part_map_size
        self.submit_id_base = submit_id_base
        self.receipt_id_base = receipt_id_base
        self.on_receipts: ReceiptSink | None = None
        self.words = words  # status word -> state (smpp_receipts.status_words)
        self.unknown_words: set[str] = set()  # logged already
        # canonical id of a non-last part of a long message -> that message
        self.parts: OrderedDict[str, LongMessage] = OrderedDict()

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
            updates: list[ReceiptUpdate] = []
            answers: list[tuple[DeliverSm, bool]] = []  # (pdu, committed with the batch?)
            forget: list[str] = []
            for pdu in batch:
                verdict = self.translate(pdu)
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
                assert self.on_receipts is not None  # set by start(), which starts this task
                try:
                    await self.on_receipts(updates)
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

    def translate(self, pdu: DeliverSm) -> Verdict:
        """What to do with one deliver_sm: commit an update, just acknowledge it, or wait."""
        name = self.gateway
        if not is_delivery_receipt(pdu):
            log.debug("smpp gateway %s: ignoring a mobile-originated message", name)
            return Verdict()
        try:
            receipt = parse_delivery_receipt(pdu)
        except ValueError as exc:
            # Refusing it would only make the SMSC send it again forever.
            log.warning("smpp gateway %s: dropping unreadable receipt: %s", name, exc)
            return Verdict()
        if receipt.tlv_id:  # receipted_message_id is written like submit_sm_resp ids
            written = receipt.tlv_id
            message_id = canonical_receipt_id(written, self.submit_id_base, self.receipt_id_base)
        else:
            written = receipt.text_id
            message_id = canonical_receipt_id(written, self.receipt_id_base, self.submit_id_base)
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
        log.debug("smpp gateway %s: receipt %s %s", name, written, provider_status)
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
