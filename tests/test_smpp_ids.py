"""SMPP message ids: the keys deliveries are stored under, and receipts finding them whatever the
SMSC's id style, with the default configuration; where an id could name two messages, the style
(configured, or learned from receipts only one reading explains) decides."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway_adapters.smpp_codec import DeliverSm
from gateway_adapters.smpp_ids import IdStyle, key_in_style, message_key
from gateway_adapters.smpp_inbound import Inbound

KEYS = [
    # (id as an SMSC wrote it, its key)
    ("0A3F0202", "a3f0202"),
    ("a3f0202", "a3f0202"),
    ("  0a3f0202\n", "a3f0202"),
    ("0123456791", "123456791"),
    ("000", "0"),
    ("msg_2023_0001", "msg_2023_0001"),
    ("B3E1C3A0-1F2E-4D5C-9B8A-7F6E5D4C3B2A", "b3e1c3a0-1f2e-4d5c-9b8a-7f6e5d4c3b2a"),
    ("0x1F", "0x1f"),  # not hex digits only: kept whole
    ("", ""),
]


@pytest.mark.parametrize(("raw", "key"), KEYS)
def test_message_key(raw: str, key: str) -> None:
    assert message_key(raw) == key


def test_key_in_each_style() -> None:
    assert key_in_style("0171901442", (16, 10)) == "a3f0202"  # decimal for a hex id
    assert key_in_style("0A3F0202", (10, 16)) == "171901442"  # hex for a decimal id
    assert key_in_style("00012345", (16, 16)) == key_in_style("00012345", (10, 10)) == "12345"
    assert key_in_style("a3f0202", (16, 10)) is None  # a letter cannot be a decimal digit
    assert key_in_style("msg_1", (16, 10)) == "msg_1"  # opaque ids only compare as written


def receipt(
    text_id: str | None = None, tlv_id: str | None = None, stat: str = "DELIVRD"
) -> DeliverSm:
    text = (f"id:{text_id} " if text_id is not None else "") + f"stat:{stat} err:000"
    tlvs = {0x001E: tlv_id.encode() + b"\x00"} if tlv_id is not None else {}
    return DeliverSm(esm_class=0x04, short_message=text.encode(), tlvs=tlvs)


def inbound(submit_id_base: int | None = None, receipt_id_base: int | None = None) -> Inbound:
    return Inbound(
        "smsc",
        receipt_batch=100,
        part_map_size=1000,
        submit_id_base=submit_id_base,
        receipt_id_base=receipt_id_base,
    )


class Known:
    """A stand-in for the service's `known_message_ids`: the keys of deliveries it knows."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)
        self.asked: list[list[str]] = []

    async def __call__(self, ids: Sequence[str]) -> set[str]:
        self.asked.append(list(ids))
        return self.keys & set(ids)


async def place(handler: Inbound, pdu: DeliverSm) -> str | None:
    reads = [handler.read(pdu)]
    if reads[0].candidates is not None:
        await handler._place(reads)
    return reads[0].key


# The styles and their relatives: how an SMSC writes message number n in submit_sm_resp,
# in the receipt text, and in receipted_message_id (None: absent), for a few numbers in turn.
STYLES: dict[str, tuple[str, str | None, str | None, Sequence[int]]] = {
    "decimal in both, no TLV (RestComm)": ("{:d}", "{:d}", None, range(123456789, 123456794)),
    "zero-padded decimal resp, unpadded receipt": (
        "{:010d}",
        "{:d}",
        None,
        range(123456791, 123456796),
    ),
    "hex of digits only in both": ("{:08X}", "{:08X}", None, range(0x12345, 0x1234A)),
    "hex resp, decimal receipt": ("{:08X}", "{:010d}", None, range(0x0A3F0202, 0x0A3F0207)),
    "hex resp, unpadded lower-case hex receipt": (
        "{:08X}",
        "{:x}",
        None,
        range(0x0A3F0203, 0x0A3F0208),
    ),
    "hex resp, unpadded TLV": ("{:08X}", None, "{:x}", range(0x0A3F0204, 0x0A3F0209)),
    "hex resp, TLV and decimal text": (
        "{:08X}",
        "{:010d}",
        "{:08X}",
        range(0x0A000001, 0x0A000006),
    ),
    "lower-case hex resp, upper-case receipt": ("{:08x}", "{:08X}", None, range(0xABC0, 0xABC5)),
    "decimal resp, hex receipt": ("{:d}", "{:X}", None, range(171901442, 171901447)),
    "unpadded hex resp, padded decimal receipt": ("{:x}", "{:010d}", None, range(0xA00, 0xA05)),
    "opaque ids": ("msg_{:d}_x", "MSG_{:d}_X", None, range(1, 6)),
}


@pytest.mark.parametrize("case", STYLES)
async def test_every_id_style_finds_its_delivery_with_the_default_configuration(
    case: str,
) -> None:
    resp_format, text_format, tlv_format, numbers = STYLES[case]
    handler = inbound()
    keys = [handler.submitted(resp_format.format(n)) for n in numbers]
    for n, key in zip(numbers, keys, strict=True):
        pdu = receipt(
            text_format.format(n) if text_format else None,
            tlv_format.format(n) if tlv_format else None,
        )
        assert await place(handler, pdu) == key, n


@pytest.mark.parametrize("case", STYLES)
async def test_every_id_style_is_learned_and_then_needs_no_memory(case: str) -> None:
    resp_format, text_format, tlv_format, numbers = STYLES[case]
    if text_format is None or not resp_format.startswith("{"):
        pytest.skip("receipts without a text id, and opaque ids, need no style")
    handler = inbound()
    for n in numbers:
        handler.submitted(resp_format.format(n))
    for n in numbers:
        tlv = tlv_format.format(n) if tlv_format else None
        await place(handler, receipt(text_format.format(n), tlv))
    assert handler.style.settled and handler.recent == {}
    # A receipt of a message this adapter never saw (sent by another process) is read alike.
    n = numbers[-1] + 1
    expected = message_key(resp_format.format(n))
    assert await place(handler, receipt(text_format.format(n))) == expected


async def test_an_id_two_deliveries_could_have_waits_for_the_style() -> None:
    # Decimal ids 20 and 32 were both sent (by other processes): receipt 'id:32' is message 32
    # if the SMSC writes decimal for decimal, message 0x20 = 32 if decimal for hex ids.
    handler = inbound()
    handler.known_ids = Known("32", "20")
    assert await place(handler, receipt("32")) is None  # answered with a temporary error
    assert handler.refused == 0  # counted by the worker, which answers it
    # Receipts only one reading explains teach the style ...
    handler.known_ids = Known("32", "20", "200", "201", "202")
    for text_id in ("200", "201", "202"):  # 0xc8... are no decimal ids; 0x200 = 512 unknown
        assert await place(handler, receipt(text_id)) == text_id
    assert handler.style.learned == (0, 0)  # ids as written (decimal or hex alike)
    # ... and then decides.
    assert await place(handler, receipt("32")) == "32"


@pytest.mark.parametrize(
    ("bases", "key"), [((10, 10), "32"), ((16, 10), "20"), ((10, 16), "50"), ((0, 0), "32")]
)
async def test_a_configured_style_decides_at_once(bases: tuple[int, int], key: str) -> None:
    handler = inbound(*bases)
    handler.known_ids = Known("32", "20", "50")
    assert handler.style.settled
    assert await place(handler, receipt("32")) == key
    assert handler.known_ids.asked == []  # type: ignore[attr-defined]


async def test_a_receipt_naming_no_message_of_ours_waits() -> None:
    handler = inbound()
    handler.known_ids = Known()
    assert await place(handler, receipt("4711")) is None


async def test_our_own_message_does_not_decide_while_another_reading_names_one_too() -> None:
    handler = inbound()
    handler.submitted("20")  # this adapter sent '20' (0x20 if the SMSC writes hex) ...
    handler.known_ids = Known("20", "32")  # ... another process sent '32'
    assert await place(handler, receipt("32")) is None


async def test_a_failing_lookup_leaves_the_receipt_for_later() -> None:
    async def broken(ids: Sequence[str]) -> set[str]:
        raise OSError("database unreachable")

    handler = inbound()
    handler.submitted("0A3F0202")
    handler.known_ids = broken
    # Our own message alone would explain it, but another process's could too: not decided.
    assert await place(handler, receipt("0171901442")) is None
    handler.known_ids = None  # no service to ask (a lone adapter): its own messages decide
    assert await place(handler, receipt("0171901442")) == "a3f0202"


def test_facts_rule_styles_out() -> None:
    style = IdStyle()
    style.saw_submit_id("0A000001")  # a hex letter: hex in submit_sm_resp
    assert style.possible == {(16, 16), (16, 10)}
    assert not style.settled
    assert style.saw_receipt_id("a000001")  # a hex letter in the receipt too: settled
    assert style.learned == (16, 16)


def test_evidence_that_disagrees_starts_over() -> None:
    style = IdStyle()
    assert not style.confirm({(16, 10)})
    assert not style.confirm({(10, 10), (16, 16)})  # a coincidence, or the first was
    assert (style.contradictions, style.evidence) == (1, 1)
    assert not style.confirm({(10, 10), (16, 16)})
    assert style.confirm({(10, 10), (16, 16), (10, 16)})  # third in agreement: ids as written
    assert style.learned is not None and style.key("00012345") == "12345"


def test_configured_bases() -> None:
    assert IdStyle(16, 10).learned == (16, 10)
    assert IdStyle(0, 10).learned == (0, 0)
    assert IdStyle(16, None).possible == {(16, 16), (16, 10)}
    # A configured decimal receipt base and a receipt text with a hex letter: taken as written,
    # as Kannel takes a non-decimal id for hex.
    assert IdStyle(16, 10).key("0A3F0202") == "a3f0202"
