"""SMPP delivery receipts: the deliver_sm an SMSC sends about a message, read into its parts,
and written the customary way (for the SMSC simulator).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway_adapters.base import DeliveryState
from gateway_adapters.smpp_codec import (
    ESM_CLASS_DELIVERY_RECEIPT,
    ESM_CLASS_TYPE_MASK,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    DeliverSm,
    decode_text,
    tlv_c_octet,
)

# The one place DLR `stat` words become our states. Unknown words are transient (SENT), so a word
# we have not seen never closes a delivery.
STAT_STATES: dict[str, DeliveryState] = {
    "DELIVRD": DeliveryState.DELIVERED,
    "UNDELIV": DeliveryState.FAILED,
    "REJECTD": DeliveryState.FAILED,
    "DELETED": DeliveryState.FAILED,
    "EXPIRED": DeliveryState.EXPIRED,
    "ACCEPTD": DeliveryState.SENT,
    "ENROUTE": DeliveryState.SENT,
    "UNKNOWN": DeliveryState.SENT,
}

# message_state TLV values (SMPP 3.4 section 5.2.28) as the stat word for the same state.
MESSAGE_STATE_STATS: dict[int, str] = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}


def state_for_stat(stat: str) -> DeliveryState:
    return STAT_STATES.get(stat.strip().upper(), DeliveryState.SENT)


_RECEIPT_FIELD = re.compile(r"\b(id|sub|dlvrd|submit date|done date|stat|err)\s*:\s*(\S*)", re.I)
_RECEIPT_TEXT = re.compile(r"\btext\s*:", re.I)


# The customary layout, exactly as `receipt_text` writes it, with plain alphanumeric values: read by
# one match. Such values hold no ':' and no word boundary before 'text', so the general reading
# below would give the same fields; anything else takes the general reading.
_RECEIPT_USUAL = re.compile(
    r"id:([0-9A-Za-z]+) sub:([0-9A-Za-z]+) dlvrd:([0-9A-Za-z]+) submit date:([0-9A-Za-z]+) "
    r"done date:([0-9A-Za-z]+) stat:([0-9A-Za-z]+) err:([0-9A-Za-z]+)(?: text:(.*))?",
    re.S,
)


def parse_receipt_text(text: str) -> dict[str, str]:
    """The fields of 'id:X sub:001 dlvrd:001 submit date:YYMMDDhhmm ... text:...'.

    Keys are lower case ('submit date', 'done date', ...); the free `text` field is everything
    after 'text:' and is cut off first so its content cannot pose as a field.
    """
    usual = _RECEIPT_USUAL.fullmatch(text)
    if usual is not None:
        v = usual.groups()
        fast = {
            "id": v[0],
            "sub": v[1],
            "dlvrd": v[2],
            "submit date": v[3],
            "done date": v[4],
            "stat": v[5],
            "err": v[6],
        }
        if v[7] is not None:
            fast["text"] = v[7]
        return fast
    return _read_receipt_fields(text)


def _read_receipt_fields(text: str) -> dict[str, str]:
    """`parse_receipt_text` for any layout: keys in any case and order, spaces around ':'."""
    values: dict[str, str] = {}
    cut = _RECEIPT_TEXT.search(text)
    head = text[: cut.start()] if cut else text
    for match in _RECEIPT_FIELD.finditer(head):
        values.setdefault(match.group(1).lower(), match.group(2))
    if cut:
        values["text"] = text[cut.end() :]
    return values


@functools.lru_cache(maxsize=1024)  # a broadcast's receipts share a few minutes: parse each once
def parse_receipt_time(value: str | None) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss; read as UTC, since SMPP does not say which zone an SMSC uses."""
    if not value or not value.isdigit() or len(value) not in (10, 12):
        return None
    try:
        moment = datetime.strptime(value, "%y%m%d%H%M%S" if len(value) == 12 else "%y%m%d%H%M")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC)


@dataclass(slots=True)  # not frozen: that costs a microsecond per receipt, at 20,000 a second
class DeliveryReceipt:
    """A deliver_sm receipt read into its parts. `message_id` is as the SMSC wrote it;
    `id_from_tlv` says it came from receipted_message_id (written like submit_sm_resp ids)."""

    message_id: str
    id_from_tlv: bool
    stat: str
    err: str | None
    submit_date: datetime | None
    done_date: datetime | None
    fields: Mapping[str, str]

    @property
    def state(self) -> DeliveryState:
        return state_for_stat(self.stat)


def is_delivery_receipt(pdu: DeliverSm) -> bool:
    return pdu.esm_class & ESM_CLASS_TYPE_MASK == ESM_CLASS_DELIVERY_RECEIPT


def parse_delivery_receipt(pdu: DeliverSm) -> DeliveryReceipt:
    """Read a receipt deliver_sm; the TLVs win over the text where both are present.

    Raises `ValueError` when the receipt names no message id.
    """
    text = decode_text(pdu.message_bytes, pdu.data_coding)
    values = parse_receipt_text(text)
    tlv_id = pdu.tlvs.get(TAG_RECEIPTED_MESSAGE_ID)
    message_id = tlv_c_octet(tlv_id).strip() if tlv_id is not None else ""
    id_from_tlv = bool(message_id)
    if not message_id:
        message_id = values.get("id", "").strip()
    if not message_id:
        raise ValueError("delivery receipt without a message id")
    stat = values.get("stat", "").strip().upper()
    state_tlv = pdu.tlvs.get(TAG_MESSAGE_STATE)
    if state_tlv is not None and len(state_tlv) == 1 and state_tlv[0] in MESSAGE_STATE_STATS:
        stat = MESSAGE_STATE_STATS[state_tlv[0]]
    return DeliveryReceipt(
        message_id=message_id,
        id_from_tlv=id_from_tlv,
        stat=stat or "UNKNOWN",
        err=values.get("err") or None,
        submit_date=parse_receipt_time(values.get("submit date")),
        done_date=parse_receipt_time(values.get("done date")),
        fields=values,
    )


def receipt_text(
    message_id: str,
    stat: str,
    *,
    err: str = "000",
    submitted: datetime,
    done: datetime,
    delivered: bool,
    text: str = "",
) -> str:
    """The customary receipt text (SMPP 3.4 appendix B), as an SMSC writes it."""
    head = receipt_head(
        message_id, stat, err, receipt_time(submitted), receipt_time(done), delivered
    )
    return head + text[:20]


def receipt_head(
    message_id: str, stat: str, err: str, submit_date: str, done_date: str, delivered: bool
) -> str:
    """`receipt_text` up to and including 'text:', from dates already written by `receipt_time`
    (so a simulator writing many receipts writes each minute once)."""
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if delivered else '000'} "
        f"submit date:{submit_date} done date:{done_date} stat:{stat} err:{err} text:"
    )


def receipt_time(moment: datetime) -> str:
    """YYMMDDhhmm as receipts write dates: `format(moment, "%y%m%d%H%M")`, without strftime's
    cost (the simulator writes tens of thousands a second)."""
    return (
        f"{moment.year % 100:02d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}"
    )
