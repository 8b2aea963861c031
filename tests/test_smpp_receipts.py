"""SMPP delivery receipts: receipt texts and deliver_sm read into their parts, and written."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from gateway_adapters import smpp_receipts
from gateway_adapters.base import DeliveryState
from gateway_adapters.smpp_codec import DeliverSm
from gateway_adapters.smpp_receipts import (
    STAT_STATES,
    is_delivery_receipt,
    parse_delivery_receipt,
    parse_receipt_text,
    receipt_text,
    receipt_time,
)

RECEIPT = (
    "id:0167772161 sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 "
    "stat:DELIVRD err:000 text:Police: stay indoors"
)


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


def test_parse_receipt_text_variants() -> None:
    # Capitalised keys, seconds in dates, no text field; text that looks like fields is text.
    values = parse_receipt_text("ID:ab12 Sub:001 dlvrd:000 Done Date:231123120159 Stat:UNDELIV")
    assert values == {
        "id": "ab12",
        "sub": "001",
        "dlvrd": "000",
        "done date": "231123120159",
        "stat": "UNDELIV",
    }
    tricky = parse_receipt_text("id:1 stat:DELIVRD err:000 Text:id:2 stat:UNDELIV")
    assert (tricky["id"], tricky["stat"], tricky["text"]) == ("1", "DELIVRD", "id:2 stat:UNDELIV")


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


def receipt_pdu(text: str, tlvs: dict[int, bytes] | None = None, esm: int = 0x04) -> DeliverSm:
    return DeliverSm(esm_class=esm, short_message=text.encode(), tlvs=tlvs or {})


def test_parse_delivery_receipt() -> None:
    receipt = parse_delivery_receipt(receipt_pdu(RECEIPT))
    assert (receipt.message_id, receipt.id_from_tlv, receipt.stat, receipt.err) == (
        "0167772161",
        False,
        "DELIVRD",
        "000",
    )
    assert receipt.state == DeliveryState.DELIVERED
    assert receipt.submit_date == datetime(2023, 11, 23, 12, 0, tzinfo=UTC)
    assert receipt.done_date == datetime(2023, 11, 23, 12, 1, tzinfo=UTC)


def test_receipt_tlvs_win_over_the_text() -> None:
    tlvs = {0x001E: b"0A000001\x00", 0x0427: b"\x05"}  # receipted_message_id, UNDELIVERABLE
    receipt = parse_delivery_receipt(receipt_pdu(RECEIPT, tlvs))
    assert (receipt.message_id, receipt.id_from_tlv) == ("0A000001", True)
    assert (receipt.stat, receipt.state) == ("UNDELIV", DeliveryState.FAILED)


def test_receipt_text_in_message_payload() -> None:
    pdu = DeliverSm(esm_class=0x04, tlvs={0x0424: b"id:7 stat:EXPIRED err:001"})
    receipt = parse_delivery_receipt(pdu)
    assert (receipt.message_id, receipt.state, receipt.err) == ("7", DeliveryState.EXPIRED, "001")


def test_receipt_without_id_is_refused() -> None:
    with pytest.raises(ValueError, match="message id"):
        parse_delivery_receipt(receipt_pdu("sub:001 stat:DELIVRD"))


def test_unknown_or_missing_stat_is_transient() -> None:
    assert parse_delivery_receipt(receipt_pdu("id:1 stat:WHATEVR")).state == DeliveryState.SENT
    assert parse_delivery_receipt(receipt_pdu("id:1")).stat == "UNKNOWN"


@pytest.mark.parametrize(
    ("esm_class", "is_receipt"), [(0x04, True), (0x44, True), (0x00, False), (0x08, False)]
)
def test_is_delivery_receipt(esm_class: int, is_receipt: bool) -> None:
    assert is_delivery_receipt(receipt_pdu(RECEIPT, esm=esm_class)) is is_receipt


def test_stat_words() -> None:
    assert STAT_STATES == {
        "DELIVRD": DeliveryState.DELIVERED,
        "UNDELIV": DeliveryState.FAILED,
        "REJECTD": DeliveryState.FAILED,
        "DELETED": DeliveryState.FAILED,
        "EXPIRED": DeliveryState.EXPIRED,
        "ACCEPTD": DeliveryState.SENT,
        "ENROUTE": DeliveryState.SENT,
        "UNKNOWN": DeliveryState.SENT,
    }
