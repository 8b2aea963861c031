"""The SMSC simulator's submit_sm handling: who may submit, the outcome drawn for each part
(accepted, throttled, an invalid address), the answer (after `latency_ms` if set), a long
message recorded once its parts are in, and its receipts scheduled. A part of `SmscSimulator`
(smpp.py), which holds the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway_adapters.smpp_codec import (
    ESM_CLASS_UDHI,
    ESME_RINVBNDSTS,
    ESME_RINVDSTADR,
    ESME_ROK,
    ESME_RTHROTTLED,
    PduError,
    SubmitSm,
    SubmitSmResp,
)
from gateway_adapters.smpp_text import (
    ConcatInfo,
    decode_text,
    sar_info,
    split_udh,
)
from gateway_simulators.smpp_options import SmscOptions, SmscStats
from gateway_simulators.smpp_session import Session

log = logging.getLogger(__name__)


@dataclass
class Partial:
    """Parts of a long message received so far, by sequence number."""

    parts: dict[int, tuple[bytes, str, str]] = field(default_factory=dict)  # data, id, stat


class SubmitHandling:
    """Answering submit_sm and recording the messages (see the module)."""

    options: SmscOptions
    stats: SmscStats
    messages: list[dict[str, Any]]
    _rng: random.Random
    _ids: Iterator[int]
    _partials: dict[tuple[str, str, int, int], Partial]
    _spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    _schedule_receipt: Callable[[SubmitSm, str, str, str, str], None]

    # -- submit_sm -------------------------------------------------------------------------------

    def _submit(self, session: Session, pdu: SubmitSm) -> None:
        self.stats.submits += 1
        if not session.bound or session.role == "receiver":
            session.send(
                SubmitSmResp(sequence_number=pdu.sequence_number, command_status=ESME_RINVBNDSTS)
            )
            return
        # Every outcome is drawn now, in arrival order, so a seed gives the same outcomes
        # whatever the latency does to the order of the answers.
        throttle, invalid, delivered = (self._rng.random() for _ in range(3))
        concat: ConcatInfo | None = None
        data = pdu.message_bytes
        if throttle < self.options.throttle_ratio:
            status = ESME_RTHROTTLED
        elif invalid < self.options.invalid_ratio or not pdu.destination_addr.isdigit():
            status = ESME_RINVDSTADR
        else:
            status = ESME_ROK
            try:
                if pdu.esm_class & ESM_CLASS_UDHI:
                    concat, data = split_udh(data)
                else:
                    concat = sar_info(pdu.tlvs)
            except PduError as exc:
                status = exc.status
        session.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, session.in_flight)
        stat = "DELIVRD" if delivered < self.options.delivered_ratio else "UNDELIV"
        answer = functools.partial(self._answer_submit, session, pdu, status, concat, data, stat)
        if self.options.latency_ms > 0:
            self._spawn(self._answer_later(session, answer))
        else:  # answered with the rest of this read, in flight until then
            session.answered += 1
            answer()

    async def _answer_later(self, session: Session, answer: Callable[[], None]) -> None:
        try:
            await asyncio.sleep(self.options.latency_ms / 1000)
        finally:
            session.in_flight -= 1
        answer()

    def _answer_submit(
        self,
        session: Session,
        pdu: SubmitSm,
        status: int,
        concat: ConcatInfo | None,
        data: bytes,
        stat: str,
    ) -> None:
        if session.closed:
            return  # the client never learns the answer: nothing was accepted
        message_id = ""
        if status == ESME_ROK:
            number = next(self._ids)
            message_id = self.options.submit_id_format.format(number)
            self.stats.accepted += 1
            self._record_part(session, pdu, concat, data, message_id, stat)
            if pdu.registered_delivery & 0x03:
                text = decode_text(data, pdu.data_coding)
                text_id = self.options.receipt_id_format.format(number)
                self._schedule_receipt(pdu, message_id, text_id, stat, text)
        elif status == ESME_RTHROTTLED:
            self.stats.throttled += 1
        else:
            self.stats.invalid += 1
        answer = SubmitSmResp(
            sequence_number=pdu.sequence_number, command_status=status, message_id=message_id
        )
        with contextlib.suppress(OSError):
            session.send(answer)

    def _record_part(
        self,
        session: Session,
        pdu: SubmitSm,
        concat: ConcatInfo | None,
        data: bytes,
        message_id: str,
        stat: str,
    ) -> None:
        """Record the message once all its parts are in (a short message at once), with the
        ids and the receipt outcomes of its parts."""
        parts = [(data, message_id, stat)]
        if concat is not None and concat.total > 1:
            key = (pdu.source_addr, pdu.destination_addr, concat.ref, concat.total)
            partial = self._partials.setdefault(key, Partial())
            partial.parts[concat.seq] = (data, message_id, stat)
            if len(partial.parts) < concat.total:
                return
            del self._partials[key]
            parts = [partial.parts[seq] for seq in sorted(partial.parts)]
        # Joined before decoding, so a client that splits a character across parts still reads.
        text = decode_text(b"".join(d for d, _, _ in parts), pdu.data_coding)
        self.messages.append(
            {
                "id": parts[-1][1],
                "part_ids": [i for _, i, _ in parts],
                "stats": [s for _, _, s in parts],
                "parts": len(parts),
                "source_addr": pdu.source_addr,
                "source_addr_ton": pdu.source_addr_ton,
                "source_addr_npi": pdu.source_addr_npi,
                "destination_addr": pdu.destination_addr,
                "dest_addr_ton": pdu.dest_addr_ton,
                "dest_addr_npi": pdu.dest_addr_npi,
                "data_coding": pdu.data_coding,
                "priority_flag": pdu.priority_flag,
                "validity_period": pdu.validity_period,
                "registered_delivery": pdu.registered_delivery,
                "text": text,
            }
        )
        log.debug("accepted a message of %d parts", len(parts))
