"""Mobile-originated deliver_sm (a citizen's SMS to our number): read, reassembled when it came
in parts, and turned into an `InboundMessage` for the service.

- The text is the user data (short_message, or message_payload when that is empty) in its
  data_coding: GSM 03.38, UCS-2, IA5 or Latin-1 (`smpp_text.decode_text`). Parts are joined
  before decoding, so a character split across two parts still reads.
- Concatenation by a UDH (esm_class UDHI; 8- and 16-bit references) or by the sar_* TLVs. The
  parts of one message are those with the same sender, recipient, reference and part count.
  Parts are held unanswered until the whole message is committed, so the SMSC sends them again
  if we fail or die before that. A message whose parts do not all arrive within `part_seconds`
  is handed on with what did arrive, `[…]` standing for each missing part (a citizen's text
  is not dropped because the network lost a part of it).
- A message (or part) the SMSC sends again within `part_seconds` after it was committed (its
  answer was lost with the connection) is answered and not handed on twice.
- The sender (source_addr) becomes E.164: '+' and digits as they are for TON 1 (international),
  or when written with '+' or '00'; the gateway's `country_code` before them for TON 2
  (national); for TON 0 (unknown) the digits as international when they start with the
  country code, else as national. A sender that is no phone number (too short or long, an
  alphanumeric address) cannot be answered or stored: the deliver_sm is acknowledged and dropped.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_adapters.base import InboundMessage
from gateway_adapters.smpp_codec import (
    ESM_CLASS_UDHI,
    ESME_ROK,
    TON_INTERNATIONAL,
    DeliverSm,
    PduError,
)
from gateway_adapters.smpp_text import ConcatInfo, decode_text, sar_info, split_udh

log = logging.getLogger(__name__)

TON_NATIONAL = 0x02
GAP = "[…]"  # stands for a part that never arrived

# (source_addr, destination_addr, reference, parts) of a concatenated message, or
# (source_addr, destination_addr, data_coding, user data) of a single one.
_Key = tuple[str, str, int, int] | tuple[str, str, int, bytes]


def sender_phone(addr: str, ton: int, country_code: str) -> str | None:
    """The sender's number in E.164, or None when the address is no phone number."""
    addr = addr.strip()
    if addr.startswith("+"):
        digits = addr[1:]
    elif addr.startswith("00"):
        digits = addr[2:]
    elif ton == TON_INTERNATIONAL or (ton != TON_NATIONAL and addr.startswith(country_code)):
        digits = addr
    elif ton in (0, TON_NATIONAL):
        digits = country_code + addr.lstrip("0")
    else:
        return None
    if not (digits.isascii() and digits.isdigit() and 7 <= len(digits) <= 15) or digits[0] == "0":
        return None
    return "+" + digits


@dataclass(slots=True)
class Arrival:
    """A deliver_sm we hold unanswered, and the connection (`link`) it came on."""

    link: object
    pdu: DeliverSm


@dataclass(slots=True)
class Mo:
    """A whole message for the service, and the deliver_sm to answer once it is committed."""

    message: InboundMessage
    parts: list[Arrival]
    key: _Key


@dataclass(slots=True)
class _Partial:
    first_seen: float
    info: ConcatInfo
    parts: dict[int, tuple[bytes, Arrival]] = field(default_factory=dict)


class MobileOriginated:
    """One gateway's reassembly of mobile-originated messages, shared by its connections."""

    def __init__(
        self,
        gateway: str,
        *,
        country_code: str = "45",
        part_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.country_code = country_code
        self.part_seconds = part_seconds
        self._clock = clock
        self._partials: dict[_Key, _Partial] = {}
        # Keys of messages committed lately -> when: a repeat within part_seconds is answered
        # and not handed on again.
        self._committed: OrderedDict[_Key, float] = OrderedDict()
        self.dropped = 0  # deliver_sm acknowledged without being handed on (no phone number)

    @property
    def holding(self) -> int:
        """Parts held unanswered, waiting for the rest of their message."""
        return sum(len(p.parts) for p in self._partials.values())

    def read(self, link: object, pdu: DeliverSm) -> tuple[list[Mo], int | None]:
        """One mobile-originated deliver_sm: the messages it completes (itself, when it is not
        a part), and the status to answer it with at once, or None when it is held (a part
        waiting for the others, or a message to commit first)."""
        phone = sender_phone(pdu.source_addr, pdu.source_addr_ton, self.country_code)
        if phone is None:
            self.dropped += 1
            log.warning("smpp gateway %s: an inbound message from no phone number", self.gateway)
            return [], ESME_ROK
        data = pdu.message_bytes
        try:
            info: ConcatInfo | None = None
            if pdu.esm_class & ESM_CLASS_UDHI:
                info, data = split_udh(data)
            if info is None:
                info = sar_info(pdu.tlvs)
        except PduError as exc:
            log.warning("smpp gateway %s: unreadable inbound message: %s", self.gateway, exc)
            return [], exc.status
        now = self._clock()
        self._forget(now)
        arrival = Arrival(link, pdu)
        if info is None or info.total <= 1:
            key: _Key = (pdu.source_addr, pdu.destination_addr, pdu.data_coding, data)
            if key in self._committed:
                return [], ESME_ROK
            return [self._message(key, phone, pdu, [data], [arrival], 1, [])], None
        key = (pdu.source_addr, pdu.destination_addr, info.ref, info.total)
        if key in self._committed:
            return [], ESME_ROK
        partial = self._partials.get(key)
        if partial is None:
            partial = self._partials[key] = _Partial(now, info)
        # A part sent again replaces the one held: the SMSC gave up waiting for that answer.
        partial.parts[info.seq] = (data, arrival)
        if len(partial.parts) < info.total:
            return [], None
        return [self._complete(key, partial, phone)], None

    def expired(self) -> list[Mo]:
        """Messages whose parts stopped arriving `part_seconds` ago, with the parts they have."""
        now = self._clock()
        done = []
        for key, partial in list(self._partials.items()):
            if now - partial.first_seen >= self.part_seconds:
                _, arrival = next(iter(partial.parts.values()))
                pdu = arrival.pdu
                phone = sender_phone(pdu.source_addr, pdu.source_addr_ton, self.country_code)
                assert phone is not None  # checked when the part was read
                done.append(self._complete(key, partial, phone))
        return done

    def finished(self, messages: list[Mo], committed: bool) -> None:
        """The service committed these messages (or failed to): remember them for repeats,
        or forget them, so that the SMSC's resending builds them again."""
        if not committed:
            return
        now = self._clock()
        for mo in messages:
            self._committed[mo.key] = now
            self._committed.move_to_end(mo.key)

    def _complete(self, key: _Key, partial: _Partial, phone: str) -> Mo:
        del self._partials[key]
        total = partial.info.total
        missing = [seq for seq in range(1, total + 1) if seq not in partial.parts]
        chunks = [partial.parts[seq][0] for seq in sorted(partial.parts)]
        arrivals = [partial.parts[seq][1] for seq in sorted(partial.parts)]
        if missing:
            log.info(
                "smpp gateway %s: an inbound message lacks %d of its %d parts; passed on as is",
                self.gateway,
                len(missing),
                total,
            )
        return self._message(key, phone, arrivals[0].pdu, chunks, arrivals, total, missing)

    def _message(
        self,
        key: _Key,
        phone: str,
        pdu: DeliverSm,
        chunks: list[bytes],
        arrivals: list[Arrival],
        total: int,
        missing: list[int],
    ) -> Mo:
        if not missing:
            text = decode_text(b"".join(chunks), pdu.data_coding)
        else:
            # Decoded part by part: the gaps fall between parts.
            present = iter(chunks)
            seqs = {seq for seq in range(1, total + 1) if seq not in missing}
            text = "".join(
                decode_text(next(present), pdu.data_coding) if seq in seqs else GAP
                for seq in range(1, total + 1)
            )
        raw: dict[str, object] = {
            "destination_addr": pdu.destination_addr,
            "source_addr_ton": pdu.source_addr_ton,
            "data_coding": pdu.data_coding,
            "parts": total,
        }
        if missing:
            raw["missing_parts"] = missing
        return Mo(InboundMessage(None, phone, text.replace("\x00", ""), None, raw), arrivals, key)

    def _forget(self, now: float) -> None:
        committed = self._committed
        while committed:
            when = next(iter(committed.values()))
            if now - when < self.part_seconds:
                break
            committed.popitem(last=False)
