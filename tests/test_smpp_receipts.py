"""SMPP delivery receipts: receipt texts and deliver_sm read into their parts, and written.

Receipt texts are as SMSCs and providers document them (SMPP 3.4 appendix B, Vonage, OpenMarket,
smppcenter, Jasmin) or as the issue tracker of another SMPP library quotes them; each variant is
one row.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway_adapters import smpp_receipts
from gateway_adapters.base import DeliveryState
from gateway_adapters.smpp_codec import (
    DATA_CODING_UCS2,
    DeliverSm,
)
from gateway_adapters.smpp_inbound import Inbound
from gateway_adapters.smpp_receipts import (
    MESSAGE_STATES,
    STATUS_WORDS,
    is_delivery_receipt,
    parse_delivery_receipt,
    parse_receipt_text,
    parse_receipt_time,
    receipt_text,
    receipt_time,
    status_words,
)
from gateway_adapters.smpp_text import (
    gsm7_encode,
)

DELIVERED, FAILED = DeliveryState.DELIVERED, DeliveryState.FAILED
EXPIRED, SENT = DeliveryState.EXPIRED, DeliveryState.SENT

RECEIPT = (
    "id:0167772161 sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 "
    "stat:DELIVRD err:000 text:Police: stay indoors"
)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


def receipt_pdu(
    text: str | bytes,
    tlvs: dict[int, bytes] | None = None,
    esm: int = 0x04,
    coding: int = 0,
) -> DeliverSm:
    data = text.encode("latin-1") if isinstance(text, str) else text
    return DeliverSm(esm_class=esm, data_coding=coding, short_message=data, tlvs=tlvs or {})


# -- reading receipt texts ------------------------------------------------------------------------

# name -> (deliver_sm, expected: text_id, stat, err, submit date, done date, then any other field
# of the text that the row is about). Dates None where the receipt names no moment.
READINGS: dict[str, tuple[DeliverSm, tuple[Any, ...]]] = {
    "SMPP 3.4 appendix B layout": (
        receipt_pdu(RECEIPT),
        ("0167772161", "DELIVRD", "000", utc(2023, 11, 23, 12, 0), utc(2023, 11, 23, 12, 1)),
    ),
    "Vonage's example (hex-looking decimal id, text:none)": (
        receipt_pdu(
            "id:0000000012345678 sub:001 dlvrd:001 submit date:1601010100 done date:1601010101 "
            "stat:DELIVRD err:000 text:none"
        ),
        ("0000000012345678", "DELIVRD", "000", utc(2016, 1, 1, 1, 0), utc(2016, 1, 1, 1, 1)),
    ),
    "seconds in the dates (YYMMDDhhmmss)": (
        receipt_pdu(
            "id:64567564356765435676 sub:001 dlvrd:001 submit date:190608165232 "
            "done date:190608165237 stat:DELIVRD err:000 text:Hello World"
        ),
        (
            "64567564356765435676",
            "DELIVRD",
            "000",
            utc(2019, 6, 8, 16, 52, 32),
            utc(2019, 6, 8, 16, 52, 37),
        ),
    ),
    "OpenMarket: 'submitdate:' without a space, a done date of zeros": (
        receipt_pdu(
            "id:0118Z-0122I-2309U-57DGB sub:000 dlvrd:000 submitdate:180122230957 "
            "donedate:000000000000 stat:REJECTD err:375 text:"
        ),
        ("0118Z-0122I-2309U-57DGB", "REJECTD", "375", utc(2018, 1, 22, 23, 9, 57), None),
    ),
    "stat: after text:": (
        receipt_pdu("id:7781 sub:001 dlvrd:001 err:000 text:Politi: bliv inde stat:DELIVRD"),
        ("7781", "DELIVRD", "000", None, None, ("text", "Politi: bliv inde")),
    ),
    "every label after text:": (
        receipt_pdu("text:hello world id:42 stat:EXPIRED err:027"),
        ("42", "EXPIRED", "027", None, None, ("text", "hello world")),
    ),
    "labels in any case and order, spaces around the colon": (
        receipt_pdu("Stat : UNDELIV Err:001 ID:ab12 Done Date:231123120159 SUB:001"),
        ("ab12", "UNDELIV", "001", None, utc(2023, 11, 23, 12, 1, 59)),
    ),
    "text that looks like fields stays text": (
        receipt_pdu("id:1 stat:DELIVRD err:000 Text:id:2 stat:UNDELIV"),
        ("1", "DELIVRD", "000", None, None, ("text", "id:2 stat:UNDELIV")),
    ),
    "a word with a colon inside text is no label": (
        receipt_pdu("id:5 sub:001 dlvrd:001 text:status:fine stat:DELIVRD err:000"),
        ("5", "DELIVRD", "000", None, None, ("text", "status:fine")),
    ),
    "underscore in the id, data_coding 0 (not GSM 03.38's section sign)": (
        receipt_pdu("id:msg_2023_0001 sub:001 dlvrd:001 stat:DELIVRD err:000 text:"),
        ("msg_2023_0001", "DELIVRD", "000", None, None),
    ),
    "a trailing NUL (not GSM 03.38's '@')": (
        receipt_pdu(b"id:1234 sub:001 dlvrd:001 stat:DELIVRD\x00"),
        ("1234", "DELIVRD", None, None, None),
    ),
    "NULs between fields": (
        receipt_pdu(b"id:99\x00 stat:UNDELIV\x00 err:\x00001"),
        ("99", "UNDELIV", "001", None, None),
    ),
    "IA5 data_coding": (
        receipt_pdu("id:a_b stat:DELIVRD err:000", coding=1),
        ("a_b", "DELIVRD", "000", None, None),
    ),
    "14-digit dates (YYYYMMDDhhmmss)": (
        receipt_pdu(
            "id:1 sub:001 dlvrd:001 submit date:20231123120000 done date:20231123120159 "
            "stat:DELIVRD err:000"
        ),
        ("1", "DELIVRD", "000", utc(2023, 11, 23, 12, 0), utc(2023, 11, 23, 12, 1, 59)),
    ),
    "Jasmin's YYYYMMDDhhmm": (
        receipt_pdu(
            "id:2 sub:001 dlvrd:001 submit date:202311231200 done date:202311231201 "
            "stat:DELIVRD err:000"
        ),
        ("2", "DELIVRD", "000", utc(2023, 11, 23, 12, 0), utc(2023, 11, 23, 12, 1)),
    ),
    "SMPP absolute time, three hours ahead of UTC": (
        receipt_pdu(
            "id:3 sub:001 dlvrd:001 submit date:180711065903912+ done date:180711070003912+ "
            "stat:DELIVRD err:000"
        ),
        (
            "3",
            "DELIVRD",
            "000",
            utc(2018, 7, 11, 3, 59, 3, 900_000),
            utc(2018, 7, 11, 4, 0, 3, 900_000),
        ),
    ),
    "SMPP relative time names no moment": (
        receipt_pdu("id:4 done date:000000000100000R stat:DELIVRD err:000"),
        ("4", "DELIVRD", "000", None, None, ("done date", "000000000100000R")),
    ),
    "a date no reading fits stays unread (month 13)": (
        receipt_pdu("id:5 submit date:2313011200 done date:23130112 stat:DELIVRD err:000"),
        ("5", "DELIVRD", "000", None, None, ("submit date", "2313011200")),
    ),
    "UCS-2 receipt with Cyrillic text": (
        receipt_pdu(
            "id:77 sub:001 dlvrd:001 stat:DELIVRD err:000 text:Полиция".encode("utf-16-be"),
            coding=DATA_CODING_UCS2,
        ),
        ("77", "DELIVRD", "000", None, None, ("text", "Полиция")),
    ),
    "text in message_payload": (
        receipt_pdu(b"", tlvs={0x0424: b"id:7 stat:EXPIRED err:001"}),
        ("7", "EXPIRED", "001", None, None),
    ),
    "misspelt status word, as written": (
        receipt_pdu("id:8 sub:001 dlvrd:001 stat:deliverd err:000"),
        ("8", "DELIVERD", "000", None, None),
    ),
    "no stat at all": (
        receipt_pdu("id:9 sub:001 dlvrd:001 err:000"),
        ("9", "", "000", None, None),
    ),
}


@pytest.mark.parametrize("case", READINGS)
def test_receipts_as_smscs_write_them(case: str) -> None:
    pdu, (text_id, stat, err, submitted, done, *other) = READINGS[case]
    receipt = parse_delivery_receipt(pdu)
    assert (receipt.text_id, receipt.stat, receipt.err) == (text_id, stat, err)
    assert (receipt.submit_date, receipt.done_date) == (submitted, done)
    for name, value in other:
        assert receipt.fields[name] == value
    for value in receipt.fields.values():
        assert "\x00" not in value


def test_the_text_is_not_read_as_gsm_03_38() -> None:
    # The same octets read as GSM 03.38 would give '§' for '_' and '@' for the NUL.
    pdu = receipt_pdu(b"id:msg_1 stat:DELIVRD\x00")
    assert parse_delivery_receipt(pdu).text_id == "msg_1"
    assert gsm7_encode("msg§1") == b"msg_1"  # what the old reading made of it


def test_parse_receipt_text() -> None:
    assert parse_receipt_text(RECEIPT) == {
        "id": "0167772161",
        "sub": "001",
        "dlvrd": "001",
        "submit date": "2311231200",
        "done date": "2311231201",
        "stat": "DELIVRD",
        "err": "000",
        "text": "Police: stay indoors",
    }


def test_parse_receipt_text_of_the_usual_layout_agrees_with_the_general_reading() -> None:
    # The usual layout is read by one match; it must give what the general reading gives,
    # also for values that could confuse it (empty ones, 'text' as a value, odd punctuation).
    rng = random.Random(5)
    values = ["0167772161", "001", "", "text", "TEXT", "x-y", "id", "err", "2311231200"]
    tails = ["", " text:", " text:Police: stay indoors", " text:id:2 stat:UNDELIV", " text:\na"]
    for _ in range(3000):
        fields = [rng.choice(values) for _ in range(7)]
        text = "id:{} sub:{} dlvrd:{} submit date:{} done date:{} stat:{} err:{}".format(
            *fields
        ) + rng.choice(tails)
        assert parse_receipt_text(text) == smpp_receipts._read_receipt_fields(text), text


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2311231200", utc(2023, 11, 23, 12, 0)),
        ("231123120059", utc(2023, 11, 23, 12, 0, 59)),
        ("202311231200", utc(2023, 11, 23, 12, 0)),  # Jasmin: YYMMDDhhmmss is no date (month 23)
        ("201201011200", utc(2020, 12, 1, 1, 12)),  # both fit: YYMMDDhhmmss (2020, not 2012)
        ("20231123120059", utc(2023, 11, 23, 12, 0, 59)),
        ("180711070003912-", utc(2018, 7, 11, 10, 0, 3, 900_000)),
        ("180711070003900+", utc(2018, 7, 11, 7, 0, 3, 900_000)),
        ("000000000000", None),
        ("231301120", None),  # nine digits: strptime would read a month '1'
        ("2313011200", None),
        ("1601010100 ", None),
        ("".join(chr(0xFF10 + int(d)) for d in "2311231200"), None),  # full-width digits
        ("", None),
    ],
)
def test_receipt_dates(value: str, moment: datetime | None) -> None:
    assert parse_receipt_time(value) == moment


def test_receipt_text_layout() -> None:
    submitted = datetime(2023, 11, 23, 12, 0, 59, tzinfo=UTC)
    done = datetime(2023, 11, 23, 12, 1, tzinfo=UTC)
    assert receipt_text(
        "0167772161", "DELIVRD", submitted=submitted, done=done, delivered=True, text="x" * 30
    ) == (
        "id:0167772161 sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 "
        "stat:DELIVRD err:000 text:" + "x" * 20
    )
    assert receipt_text(
        "7", "UNDELIV", err="069", submitted=submitted, done=done, delivered=False
    ) == (
        "id:7 sub:001 dlvrd:000 submit date:2311231200 done date:2311231201 "
        "stat:UNDELIV err:069 text:"
    )


def test_receipt_time_writes_like_strftime() -> None:
    moment = datetime(1969, 12, 31, 23, 59, tzinfo=UTC)
    for _ in range(2000):
        assert receipt_time(moment) == f"{moment:%y%m%d%H%M}"
        moment += timedelta(days=13, hours=5, minutes=7)


def test_receipt_tlvs_win_over_the_text() -> None:
    tlvs = {0x001E: b"0A000001\x00", 0x0427: b"\x05"}  # receipted_message_id, UNDELIVERABLE
    receipt = parse_delivery_receipt(receipt_pdu(RECEIPT, tlvs))
    assert (receipt.tlv_id, receipt.text_id) == ("0A000001", "0167772161")
    assert (receipt.stat, receipt.message_state) == ("UNDELIV", 5)


def test_receipt_without_id_is_refused() -> None:
    with pytest.raises(ValueError, match="message id"):
        parse_delivery_receipt(receipt_pdu("sub:001 stat:DELIVRD"))


@pytest.mark.parametrize(
    ("esm_class", "is_receipt"), [(0x04, True), (0x44, True), (0x00, False), (0x08, False)]
)
def test_is_delivery_receipt(esm_class: int, is_receipt: bool) -> None:
    assert is_delivery_receipt(receipt_pdu(RECEIPT, esm=esm_class)) is is_receipt


# -- status ---------------------------------------------------------------------------------------


def test_every_message_state_has_a_word() -> None:
    assert set(MESSAGE_STATES) == set(range(10))
    assert {MESSAGE_STATES[n] for n in MESSAGE_STATES} <= set(STATUS_WORDS)


def test_a_gateway_maps_its_own_words() -> None:
    words = status_words({"dnd_blocked": "failed", "SUBMITD": "sent", "DELIVRD": "delivered"})
    assert (words["DND_BLOCKED"], words["SUBMITD"], words["DELIVRD"]) == (FAILED, SENT, DELIVERED)
    assert status_words() == STATUS_WORDS
    with pytest.raises(ValueError, match="'OK': 'done' is not one of delivered, expired"):
        status_words({"OK": "done"})


def inbound(**words: str) -> Inbound:
    return Inbound(
        "smsc",
        receipt_batch=10,
        part_map_size=10,
        submit_id_base=None,
        receipt_id_base=None,
        words=status_words(words),
    )


# name -> (deliver_sm, the gateway's own words, expected: state, provider_status, error)
STATUSES: dict[str, tuple[DeliverSm, dict[str, str], tuple[Any, ...]]] = {
    "DELIVRD": (receipt_pdu("id:1 stat:DELIVRD err:000"), {}, (DELIVERED, "DELIVRD", None)),
    "DELIVERED, written out": (
        receipt_pdu("id:1 stat:DELIVERED err:000"),
        {},
        (DELIVERED, "DELIVERED", None),
    ),
    "DELIVERD, misspelt": (
        receipt_pdu("id:1 stat:DELIVERD err:0"),
        {},
        (DELIVERED, "DELIVERD", None),
    ),
    "FAILED (Vonage)": (
        receipt_pdu("id:1 stat:FAILED err:005"),
        {},
        (FAILED, "FAILED", "FAILED err:005"),
    ),
    "UNDELIVERABLE": (
        receipt_pdu("id:1 stat:UNDELIVERABLE err:001"),
        {},
        (FAILED, "UNDELIVERABLE", "UNDELIVERABLE err:001"),
    ),
    "DND_REJECTED (an operator's word)": (
        receipt_pdu("id:1 stat:DND_REJECTED err:021"),
        {},
        (FAILED, "DND_REJECTED", "DND_REJECTED err:021"),
    ),
    "EXPIRED": (receipt_pdu("id:1 stat:EXPIRED err:000"), {}, (EXPIRED, "EXPIRED", None)),
    "ENROUTE waits for more": (receipt_pdu("id:1 stat:ENROUTE"), {}, (SENT, "ENROUTE", None)),
    "ACCEPTD waits for more": (
        receipt_pdu("id:1 stat:ACCEPTD err:000"),
        {},
        (SENT, "ACCEPTD", None),
    ),
    "UNKNOWN is final in SMPP": (
        receipt_pdu("id:1 stat:UNKNOWN err:000"),
        {},
        (FAILED, "UNKNOWN", None),
    ),
    "a word the gateway maps": (
        receipt_pdu("id:1 stat:SUBMITD err:000"),
        {"SUBMITD": "sent"},
        (SENT, "SUBMITD", None),
    ),
    "a gateway mapping a standard word its own way": (
        receipt_pdu("id:1 stat:ACCEPTD err:000"),
        {"ACCEPTD": "delivered"},
        (DELIVERED, "ACCEPTD", None),
    ),
    "an unknown word ends the delivery as failed": (
        receipt_pdu("id:1 stat:WHATEVR err:000"),
        {},
        (FAILED, "WHATEVR", "unknown receipt status 'WHATEVR' err:000"),
    ),
    "no status at all": (
        receipt_pdu("id:1 sub:001 dlvrd:001"),
        {},
        (FAILED, "", "receipt without a status"),
    ),
    "message_state wins over the text": (
        receipt_pdu("id:1 stat:DELIVRD err:000", {0x0427: b"\x05"}),
        {},
        (FAILED, "UNDELIV", None),
    ),
    "message_state 9 (SMPP 5.0's SKIPPED)": (
        receipt_pdu("id:1 err:000", {0x0427: b"\x09"}),
        {},
        (FAILED, "SKIPPED", None),
    ),
    "message_state beyond 9: the text decides": (
        receipt_pdu("id:1 stat:DELIVRD err:000", {0x0427: b"\x0c"}),
        {},
        (DELIVERED, "DELIVRD", None),
    ),
    "message_state beyond 9 and no word": (
        receipt_pdu("id:1 err:000", {0x0427: b"\x0c"}),
        {},
        (FAILED, "message_state 12", "unknown receipt status 'message_state 12' err:000"),
    ),
}


@pytest.mark.parametrize("case", STATUSES)
def test_receipt_statuses(case: str) -> None:
    pdu, words, expected = STATUSES[case]
    handler = inbound(**words)
    update = handler.translate(handler.read(pdu)).update
    assert update is not None
    assert (update.state, update.provider_status, update.error) == expected
