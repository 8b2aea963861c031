"""SMPP delivery receipts: the deliver_sm an SMSC sends about a message, read into its parts,
and written the customary way (for the SMSC simulator).

How a receipt is read, wherever SMSCs differ from SMPP 3.4 appendix B:

- The text is read as plain ASCII (Latin-1 for octets above 0x7F) whatever the data_coding says,
  except UCS-2 (8), which is read as UTF-16: SMSCs write receipts themselves, and reading them as
  GSM 03.38 turned '_' into '§' and a trailing NUL into '@'. NULs are dropped before anything
  else (PostgreSQL's jsonb cannot store them).
- Each label (`id:`, `sub:`, `dlvrd:`, `submit date:`, `done date:`, `stat:`, `err:`, `text:`, in
  any case, `submitdate:` too) is read wherever it stands, as cloudhopper-smpp does: a field's value
  runs to the next label, so `stat:` after `text:` is still read. A label counts at the start or
  after a space only, and only its first occurrence, so text such as `text:id:2 stat:X` stays text.
  Values other than `text` are their first word.
- Dates: YYMMDDhhmm, YYMMDDhhmmss, YYYYMMDDhhmmss, YYYYMMDDhhmm (Jasmin's; twelve digits are read
  as YYMMDDhhmmss when that is a date, which rules out only years 2001 to 2012), and SMPP absolute
  time ('YYMMDDhhmmsstnnp', its offset applied). Dates without a zone are taken as UTC. Anything
  else is not read: the value stays in the receipt's raw data, and the receipt's time is unknown.
- Status: the message_state TLV wins over the text's `stat:` word when it holds a value SMPP
  defines (0 to 9); `STATUS_WORDS` maps words to our states, and a gateway may map its own
  (`status_words`). A word neither knows, or a receipt without any, ends the delivery as failed
  with the word in its error: a receipt is the SMSC's last word on a message, and a delivery left
  'sent' for ever would count as still under way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway_adapters.base import DeliveryState
from gateway_adapters.smpp_codec import (
    DATA_CODING_UCS2,
    ESM_CLASS_DELIVERY_RECEIPT,
    ESM_CLASS_TYPE_MASK,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    DeliverSm,
    tlv_c_octet,
)

_DELIVERED, _FAILED = DeliveryState.DELIVERED, DeliveryState.FAILED
_EXPIRED, _SENT = DeliveryState.EXPIRED, DeliveryState.SENT

# The one place receipt status words become our states (upper case). SENT means "not decided
# yet": the delivery waits for a later receipt.
STATUS_WORDS: dict[str, DeliveryState] = {
    # SMPP 3.4 appendix B and section 5.2.28. UNKNOWN is a final state there ("message is in
    # invalid state"); ACCEPTD is too, but SMSCs send it when they take a message, before its
    # outcome, so it waits for the receipt that follows.
    "DELIVRD": _DELIVERED,
    "EXPIRED": _EXPIRED,
    "DELETED": _FAILED,
    "UNDELIV": _FAILED,
    "ACCEPTD": _SENT,
    "UNKNOWN": _FAILED,
    "REJECTD": _FAILED,
    "ENROUTE": _SENT,
    # SMPP 5.0's further message states.
    "SCHEDULED": _SENT,
    "SKIPPED": _FAILED,
    # Written out, as aggregators do (Vonage's receipts: delivered, expired, failed, rejected,
    # accepted, buffered, unknown), and misspelt as SMSCs have.
    "DELIVERED": _DELIVERED,
    "DELIVERD": _DELIVERED,
    "UNDELIVERABLE": _FAILED,
    "UNDELIVERED": _FAILED,
    "FAILED": _FAILED,
    "REJECTED": _FAILED,
    "ACCEPTED": _SENT,
    "BUFFERED": _SENT,
    # Operators' own words: India's do-not-disturb registry refusing the number.
    "DND_REJECTED": _FAILED,
}

# message_state TLV values (SMPP 3.4 section 5.2.28; 0 and 9 from SMPP 5.0) as status words.
MESSAGE_STATES: dict[int, str] = {
    0: "SCHEDULED",
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
    9: "SKIPPED",
}

# What a gateway's own `status_words` may map a word to.
CONFIGURABLE_STATES = {str(s): s for s in (_DELIVERED, _FAILED, _EXPIRED, _SENT)}


def status_words(configured: Mapping[str, str] | None = None) -> dict[str, DeliveryState]:
    """`STATUS_WORDS` with a gateway's own words (word -> 'delivered', 'failed', 'expired' or
    'sent'); `ValueError` naming a word whose state is none of those."""
    words = dict(STATUS_WORDS)
    for word, state in (configured or {}).items():
        if state not in CONFIGURABLE_STATES:
            choices = ", ".join(sorted(CONFIGURABLE_STATES))
            raise ValueError(f"status word {word!r}: {state!r} is not one of {choices}")
        words[word.strip().upper()] = CONFIGURABLE_STATES[state]
    return words


def receipt_text_of(pdu: DeliverSm) -> str:
    """A receipt's text as the SMSC wrote it: ASCII (octets above 0x7F as Latin-1), UTF-16 for
    UCS-2, NULs dropped."""
    data = pdu.message_bytes
    if pdu.data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", errors="replace").replace("\x00", "")
    return data.replace(b"\x00", b"").decode("latin-1")


# The customary layout, exactly as `receipt_text` writes it, with plain alphanumeric values: read by
# one match. Such values hold no label, so the general reading below gives the same fields
# (tests/test_smpp_receipts.py checks it); anything else takes the general reading.
_RECEIPT_USUAL = re.compile(
    r"id:([0-9A-Za-z]+) sub:([0-9A-Za-z]+) dlvrd:([0-9A-Za-z]+) submit date:([0-9A-Za-z]+) "
    r"done date:([0-9A-Za-z]+) stat:([0-9A-Za-z]+) err:([0-9A-Za-z]+)(?: text:(.*))?",
    re.S,
)
# A label: at the start or after white space, any case, spaces before the colon.
_LABEL = re.compile(r"(?<!\S)(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:", re.I)
_LABEL_NAMES = {"submitdate": "submit date", "submit_date": "submit date"}
_LABEL_NAMES.update({"donedate": "done date", "done_date": "done date"})


def parse_receipt_text(text: str) -> dict[str, str]:
    """The fields of 'id:X sub:001 dlvrd:001 submit date:YYMMDDhhmm ... text:...', labels in any
    order. Keys are lower case ('submit date', 'done date', ...)."""
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
    """`parse_receipt_text` for any layout: each label's first occurrence, its value up to the
    next of those labels (cloudhopper-smpp's reading)."""
    labels: list[tuple[str, int, int]] = []  # (name, start, end of the label)
    seen: set[str] = set()
    for match in _LABEL.finditer(text):
        name = match.group(1).lower()
        name = _LABEL_NAMES.get(name, name)
        if name not in seen:
            seen.add(name)
            labels.append((name, match.start(), match.end()))
    values: dict[str, str] = {}
    for i, (name, _, end) in enumerate(labels):
        stop = labels[i + 1][1] if i + 1 < len(labels) else len(text)
        value = text[end:stop]
        if name == "text":
            values[name] = value.rstrip() if stop < len(text) else value
        else:
            words = value.split(None, 1)
            values[name] = words[0] if words else ""
    return values


@functools.lru_cache(maxsize=1024)  # a broadcast's receipts share a few minutes: parse each once
def parse_receipt_time(value: str | None) -> datetime | None:
    """A receipt date as a moment (see the module docstring for the forms); None otherwise."""
    if not value or not value.isascii():
        return None
    if len(value) == 16 and value[:15].isdigit():
        return _absolute_time(value)
    if not value.isdigit():
        return None
    for four_digit_year, seconds in _DATE_LAYOUTS.get(len(value), ()):
        moment = _moment(value, four_digit_year, seconds)
        if moment is not None:
            return moment
    return None


# Digits in a date -> its layouts, in the order tried: (four-digit year?, seconds?).
_DATE_LAYOUTS = {10: ((False, False),), 12: ((False, True), (True, False)), 14: ((True, True),)}


def _moment(digits: str, four_digit_year: bool, seconds: bool) -> datetime | None:
    """The digits read field by field at fixed widths (strptime would take '2' for a month
    where '23' is none, and misread the rest)."""
    year, rest = (
        (int(digits[:4]), digits[4:]) if four_digit_year else (2000 + int(digits[:2]), digits[2:])
    )
    month, day, hour, minute = (int(rest[i : i + 2]) for i in range(0, 8, 2))
    second = int(rest[8:10]) if seconds else 0
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _absolute_time(value: str) -> datetime | None:
    """SMPP absolute time 'YYMMDDhhmmsstnnp' (SMPP 3.4 section 7.1.1): local time, tenths of a
    second, and the offset from UTC in quarter hours ('+' ahead, '-' behind); 'R' (relative
    time) names no moment."""
    sign = value[15]
    local = _moment(value[:12], False, True)
    if sign not in "+-" or local is None:
        return None
    offset = timedelta(minutes=15 * int(value[13:15]))
    moment = local + timedelta(milliseconds=100 * int(value[12]))
    return moment - offset if sign == "+" else moment + offset


@dataclass(slots=True)  # not frozen: that costs a microsecond per receipt, at 20,000 a second
class DeliveryReceipt:
    """A deliver_sm receipt read into its parts, ids as the SMSC wrote them: `text_id` from the
    text's `id:` field, `tlv_id` from receipted_message_id ('' where absent). `stat` is the status
    word (upper case; the message_state TLV's when it holds a defined value, else the text's);
    `message_state` the TLV's value, if any."""

    text_id: str
    tlv_id: str
    stat: str
    message_state: int | None
    err: str | None
    submit_date: datetime | None
    done_date: datetime | None
    fields: Mapping[str, str]

    def state(self, words: Mapping[str, DeliveryState]) -> DeliveryState | None:
        """Our state for the receipt's status; None when `words` does not know it."""
        return words.get(self.stat)


def is_delivery_receipt(pdu: DeliverSm) -> bool:
    return pdu.esm_class & ESM_CLASS_TYPE_MASK == ESM_CLASS_DELIVERY_RECEIPT


def parse_delivery_receipt(pdu: DeliverSm) -> DeliveryReceipt:
    """Read a receipt deliver_sm; the TLVs win over the text where both are present.

    Raises `ValueError` when the receipt names no message id.
    """
    values = parse_receipt_text(receipt_text_of(pdu))
    tlv = pdu.tlvs.get(TAG_RECEIPTED_MESSAGE_ID)
    tlv_id = tlv_c_octet(tlv).strip() if tlv is not None else ""
    text_id = values.get("id", "").strip()
    if not tlv_id and not text_id:
        raise ValueError("delivery receipt without a message id")
    stat = values.get("stat", "").strip().upper()
    state_tlv = pdu.tlvs.get(TAG_MESSAGE_STATE)
    message_state = state_tlv[0] if state_tlv is not None and len(state_tlv) == 1 else None
    if message_state in MESSAGE_STATES:
        stat = MESSAGE_STATES[message_state]
    return DeliveryReceipt(
        text_id=text_id,
        tlv_id=tlv_id,
        stat=stat,
        message_state=message_state,
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
