"""The SMPP adapter's sending: each message as submit_sm (one per part), through the window of
the connection submit_sm go on (`smpp_link`), and each outcome as the message's `SendResult`
(accepted with its id, throttled, worth a retry, or refused). A part of `SmppAdapter` (smpp.py),
which holds the settings.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from gateway_adapters.base import (
    GatewayConfig,
    GatewayUnavailable,
    OutboundMessage,
    SendResult,
)
from gateway_adapters.smpp_codec import (
    ESME_RINVBNDSTS,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    NPI_ISDN,
    TON_INTERNATIONAL,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    absolute_time,
    status_name,
)
from gateway_adapters.smpp_config import Endpoint
from gateway_adapters.smpp_ids import (
    message_key,
)
from gateway_adapters.smpp_inbound import Inbound, LongMessage
from gateway_adapters.smpp_link import Batch, Link, Submit, deliver_outcome
from gateway_adapters.smpp_text import (
    MessageTooLong,
    split_message,
)

log = logging.getLogger(__name__)

# Answers that mean "slow down": not the message's fault, no attempt should be charged for them.
THROTTLE_STATUSES = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
# Answers that mean "this time, not this message": try again later.
TRANSIENT_STATUSES = frozenset({ESME_RSYSERR, ESME_RX_T_APPN, ESME_RINVBNDSTS})
PRIORITY_FLAGS = {"emergency": 3, "high": 2}  # GSM treats any non-zero flag as "priority"


def destination_for_phone(phone: str) -> str | None:
    """'+4520123456' -> '4520123456' (sent as TON 1 / NPI 1); None when not E.164 digits."""
    digits = phone.removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return digits


class SmppSubmitting:
    """Sending a batch through the window (see the module)."""

    config: GatewayConfig
    endpoint: Endpoint
    registered_delivery: int
    throttle_retry_after: float
    _roles: tuple[str, ...]
    _links: dict[str, Link]
    _ref: int
    _inbound: Inbound

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
