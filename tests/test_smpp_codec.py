"""SMPP 3.4 codec: byte-exact PDUs, GSM-7/UCS-2 text, concatenation, receipts, message ids.

Expected bytes are written out by hand from the specification's field layouts (spaces separate
fields), never produced by the encoder under test.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway_adapters import gsm7, smpp_codec
from gateway_adapters.smpp_codec import (
    DATA_CODING_DEFAULT,
    DATA_CODING_UCS2,
    DELIVER_SM_RESP,
    ENQUIRE_LINK_RESP,
    ESM_CLASS_UDHI,
    ESME_RBINDFAIL,
    ESME_RINVCMDID,
    ESME_RINVMSGLEN,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    GENERIC_NACK,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    FrameReader,
    GenericNack,
    Pdu,
    PduError,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
    absolute_time,
    decode,
    encode,
    encode_response,
    read_frame,
    status_name,
)
from gateway_adapters.smpp_text import (
    GSM7_BASIC_TABLE,
    GSM7_EXTENSION_TABLE,
    ConcatInfo,
    MessageTooLong,
    decode_text,
    gsm7_char,
    gsm7_decode,
    gsm7_encode,
    split_message,
    split_udh,
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# -- PDUs -----------------------------------------------------------------------------------------

# (pdu, expected bytes): encode gives the bytes, decode gives the PDU back.
PDU_CASES: dict[str, tuple[Pdu, str]] = {
    "enquire_link": (
        EnquireLink(sequence_number=1),
        "00000010 00000015 00000000 00000001",
    ),
    "enquire_link_resp": (
        EnquireLinkResp(sequence_number=1),
        "00000010 80000015 00000000 00000001",
    ),
    "unbind": (Unbind(sequence_number=7), "00000010 00000006 00000000 00000007"),
    "unbind_resp": (UnbindResp(sequence_number=7), "00000010 80000006 00000000 00000007"),
    "generic_nack": (
        GenericNack(sequence_number=5, command_status=ESME_RINVCMDID),
        "00000010 80000000 00000003 00000005",
    ),
    "bind_transceiver": (
        BindTransceiver(sequence_number=1, system_id="sim", password="pw"),
        # system_id "sim\0", password "pw\0", system_type "\0", version 0x34, ton, npi,
        # address_range "\0"
        "0000001C 00000009 00000000 00000001 73696D00 707700 00 34 00 00 00",
    ),
    "bind_transceiver_resp": (
        BindTransceiverResp(sequence_number=1, system_id="SMSC", sc_interface_version=0x34),
        # system_id "SMSC\0", TLV sc_interface_version 0x0210 length 1 value 0x34
        "0000001A 80000009 00000000 00000001 534D534300 0210 0001 34",
    ),
    "bind_transmitter": (
        BindTransmitter(sequence_number=3, system_id="sim", password="pw"),
        "0000001C 00000002 00000000 00000003 73696D00 707700 00 34 00 00 00",
    ),
    "bind_transmitter_resp": (
        BindTransmitterResp(sequence_number=3, system_id="SMSC"),
        "00000015 80000002 00000000 00000003 534D534300",
    ),
    "bind_receiver": (
        BindReceiver(sequence_number=4, system_id="sim", password="pw", system_type="VMA"),
        "0000001F 00000001 00000000 00000004 73696D00 707700 564D4100 34 00 00 00",
    ),
    "bind_receiver_resp": (
        BindReceiverResp(sequence_number=4, command_status=ESME_RBINDFAIL, system_id=""),
        "00000011 80000001 0000000D 00000004 00",
    ),
    "submit_sm": (
        SubmitSm(
            sequence_number=2,
            source_addr_ton=5,
            source_addr="POLITI",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="4520000001",
            registered_delivery=1,
            short_message=b"Hi",
        ),
        # service_type "", src ton 5 npi 0 "POLITI", dst ton 1 npi 1 "4520000001",
        # esm_class, protocol_id, priority, schedule "", validity "",
        # registered_delivery 1, replace 0, data_coding 0, default_msg_id 0, sm_length 2, "Hi"
        "00000033 00000004 00000000 00000002"
        " 00 05 00 504F4C49544900 01 01 3435323030303030303100"
        " 00 00 00 00 00 01 00 00 00 02 4869",
    ),
    "submit_sm concatenated ucs2 with payload tlv": (
        SubmitSm(
            sequence_number=0x7FFFFFFF,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="45",
            esm_class=ESM_CLASS_UDHI,
            priority_flag=3,
            validity_period="240102030405000+",
            data_coding=DATA_CODING_UCS2,
            short_message=hx("050003 07 02 01 0416"),
            tlvs={0x0424: b"x"},
        ),
        "00000040 00000004 00000000 7FFFFFFF"
        " 00 00 00 00 01 01 343500"
        " 40 00 03 00 3234303130323033303430353030302B00"
        " 00 00 08 00 08 0500030702010416 0424 0001 78",
    ),
    "submit_sm_resp": (
        SubmitSmResp(sequence_number=2, message_id="0A000001"),
        "00000019 80000004 00000000 00000002 304130303030303100",
    ),
    "deliver_sm receipt with tlvs": (
        DeliverSm(
            sequence_number=9,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="4520000001",
            dest_addr_ton=5,
            destination_addr="POLITI",
            esm_class=0x04,
            short_message=b"id:42 stat:DELIVRD",
            tlvs={0x001E: b"2A\x00", 0x0427: b"\x02"},
        ),
        "0000004F 00000005 00000000 00000009"
        " 00 01 01 3435323030303030303100 05 00 504F4C49544900"
        " 04 00 00 00 00 00 00 00 00 12 69643A34322073746174 3A44454C49565244"
        " 001E 0003 324100 0427 0001 02",
    ),
    "deliver_sm_resp": (
        DeliverSmResp(sequence_number=9),
        "00000011 80000005 00000000 00000009 00",
    ),
}


@pytest.mark.parametrize("case", PDU_CASES)
def test_encode_is_byte_exact(case: str) -> None:
    pdu, expected = PDU_CASES[case]
    assert encode(pdu).hex().upper() == hx(expected).hex().upper()


@pytest.mark.parametrize("case", PDU_CASES)
def test_decode_gives_the_pdu_back(case: str) -> None:
    pdu, expected = PDU_CASES[case]
    decoded = decode(hx(expected))
    assert type(decoded) is type(pdu)
    assert decoded == pdu


# Answers with an error status may come without a body.
DECODE_ONLY = {
    "submit_sm_resp throttled, no body": (
        "00000010 80000004 00000058 00000003",
        SubmitSmResp(sequence_number=3, command_status=ESME_RTHROTTLED),
    ),
    "bind_transceiver_resp refused, no body": (
        "00000010 80000009 0000000D 00000001",
        BindTransceiverResp(sequence_number=1, command_status=ESME_RBINDFAIL),
    ),
    "deliver_sm_resp without body": (
        "00000010 80000005 00000000 00000004",
        DeliverSmResp(sequence_number=4),
    ),
    "unknown command": (
        "00000012 00000103 00000000 00000006 ABCD",
        UnknownPdu(sequence_number=6, unknown_command_id=0x103, body=b"\xab\xcd"),
    ),
}


@pytest.mark.parametrize("case", DECODE_ONLY)
def test_decode_lenient_forms(case: str) -> None:
    raw, expected = DECODE_ONLY[case]
    assert decode(hx(raw)) == expected


def test_unknown_pdu_is_a_request_or_response_by_its_id() -> None:
    assert not UnknownPdu(unknown_command_id=0x103).is_response
    assert UnknownPdu(unknown_command_id=0x80000103).is_response
    assert encode(UnknownPdu(sequence_number=6, unknown_command_id=0x103, body=b"\xab")) == hx(
        "00000011 00000103 00000000 00000006 AB"
    )


MALFORMED = {
    "shorter than a header": "00000010 00000015 0000",
    "length disagrees": "00000014 00000015 00000000 00000001",
    "C-octet string without NUL": "00000013 80000004 00000000 00000002 414243",
    "submit_sm cut inside": "00000013 00000004 00000000 00000002 00 05 00",
    "sm_length beyond the body": (
        "00000027 00000004 00000000 00000002 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 09"
        " 4869 00 00 00 00"
    ),
    "truncated TLV": "00000013 80000009 00000000 00000001 00 0210",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_pdus_raise_pdu_error(case: str) -> None:
    with pytest.raises(PduError):
        decode(hx(MALFORMED[case]))


def test_pdu_error_carries_what_a_generic_nack_needs() -> None:
    with pytest.raises(PduError) as info:
        decode(hx("00000013 80000004 00000000 0000002A 414243"))
    assert (info.value.sequence_number, info.value.status) == (0x2A, ESME_RINVMSGLEN)


def test_encode_refuses_oversized_fields() -> None:
    with pytest.raises(ValueError, match="system_id"):
        encode(BindTransceiver(system_id="x" * 16))
    with pytest.raises(ValueError, match="short_message"):
        encode(SubmitSm(short_message=b"x" * 255))


async def test_read_frame_reads_exactly_one_pdu() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(hx("00000010 00000015 00000000 00000001 00000010 80000015 00000000 00000001"))
    reader.feed_eof()
    assert await read_frame(reader) == hx("00000010 00000015 00000000 00000001")
    assert decode(await read_frame(reader)) == EnquireLinkResp(sequence_number=1)
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader)


@pytest.mark.parametrize("length", ["0000000F", "00100001"])
async def test_read_frame_refuses_impossible_lengths(length: str) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(hx(length + "00000015 00000000 00000001"))
    with pytest.raises(PduError):
        await read_frame(reader)


async def test_frame_reader_gives_every_whole_pdu_that_arrived() -> None:
    first = hx("00000010 00000015 00000000 00000001")
    second = encode(DeliverSmResp(sequence_number=2))
    third = encode(SubmitSm(sequence_number=3, destination_addr="4520000001", short_message=b"x"))
    reader = asyncio.StreamReader()
    frames = FrameReader(reader, chunk=7)  # small reads: PDUs arrive in pieces
    reader.feed_data(first + second + third[:5])
    assert await frames.frames() == [first]  # reads stop once a PDU is whole
    assert await frames.frames() == [second]
    reader.feed_data(third[5:])  # the rest of the third, which began in an earlier read
    assert await frames.frames() == [third]
    reader.feed_data(first[:10])
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await frames.frames()


async def test_frame_reader_reads_a_burst_at_once() -> None:
    pdus = [encode(DeliverSmResp(sequence_number=n)) for n in range(1, 101)]
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(pdus))
    assert await FrameReader(reader).frames() == pdus


@pytest.mark.parametrize("length", ["0000000F", "00100001"])
async def test_frame_reader_refuses_impossible_lengths(length: str) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(hx(length + "00000015 00000000 00000001"))
    with pytest.raises(PduError):
        await FrameReader(reader).frames()


@pytest.mark.parametrize(
    "pdu",
    [
        DeliverSmResp(sequence_number=7),
        DeliverSmResp(sequence_number=0x7FFFFFFF, command_status=ESME_RSYSERR),
        SubmitSmResp(sequence_number=8, command_status=ESME_RTHROTTLED),
        EnquireLinkResp(sequence_number=9),
        UnbindResp(sequence_number=10),
        GenericNack(sequence_number=11, command_status=ESME_RINVCMDID),
    ],
)
def test_encode_response_is_encode(pdu: Pdu) -> None:
    assert encode_response(pdu.command_id, pdu.sequence_number, pdu.command_status) == encode(pdu)
    assert (DELIVER_SM_RESP, ENQUIRE_LINK_RESP, GENERIC_NACK) == (
        DeliverSmResp.command_id,
        EnquireLinkResp.command_id,
        GenericNack.command_id,
    )


def _short_message_pdus(rng: random.Random, n: int) -> list[Pdu]:
    """Varied submit_sm/deliver_sm: empty and non-ASCII fields, any octets, TLVs or none."""
    pdus: list[Pdu] = []
    for _ in range(n):
        cls = rng.choice([SubmitSm, DeliverSm])
        pdus.append(
            cls(
                sequence_number=rng.randrange(1, 0x7FFFFFFF),
                command_status=rng.choice([0, ESME_RSYSERR]),
                service_type=rng.choice(["", "CMT"]),
                source_addr_ton=rng.randrange(256),
                source_addr_npi=rng.choice([0, 1, 10]),
                source_addr=rng.choice(["", "4520000001", "Æble"]),
                dest_addr_ton=rng.choice([0, 5]),
                destination_addr=rng.choice(["", "POLITI"]),
                esm_class=rng.choice([0, 0x04, 0x0A, 0x40]),
                protocol_id=rng.choice([0, 10]),
                priority_flag=rng.randrange(4),
                schedule_delivery_time=rng.choice(["", "240102030405000+"]),
                validity_period=rng.choice(["", "240102030405000+"]),
                registered_delivery=rng.choice([0, 1, 10]),
                replace_if_present_flag=rng.choice([0, 1]),
                data_coding=rng.choice([0, 8, 10]),
                sm_default_msg_id=rng.choice([0, 10]),
                short_message=bytes(rng.randrange(256) for _ in range(rng.randrange(60))),
                tlvs=rng.choice([{}, {0x001E: b"0A\x00"}, {0x0427: b"\x05", 0x0424: b"\n\x00"}]),
            )
        )
    return pdus


def _decode_field_by_field(frame: bytes) -> Pdu | None:
    """What decode gives when it reads a submit_sm/deliver_sm field by field; None for an error."""
    _, command_id, status, sequence = smpp_codec.HEADER.unpack_from(frame)
    cls = SubmitSm if command_id == SubmitSm.command_id else DeliverSm
    try:
        values = cls.decode_fields(smpp_codec._Reader(frame, smpp_codec.HEADER_SIZE), status)
    except PduError:
        return None
    return cls(sequence_number=sequence, command_status=status, **values)


def test_short_message_pdus_read_in_one_go_equal_the_field_by_field_reading() -> None:
    rng = random.Random(7)
    for pdu in _short_message_pdus(rng, 3000):
        frame = encode(pdu)
        assert decode(frame) == pdu == _decode_field_by_field(frame)
        assert type(decode(frame)) is type(pdu)
        # Damaged copies: both readings agree on the PDU, or both refuse it.
        body = bytearray(frame[16:])
        damage = rng.randrange(3)
        if damage == 0 and body:
            del body[rng.randrange(len(body)) :]
        elif damage == 1 and body:
            body[rng.randrange(len(body))] = rng.choice([0x00, 0x0A, 0xFF])
        else:
            body += bytes([rng.randrange(256)])
        header = smpp_codec.HEADER.pack(
            16 + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number
        )
        damaged = header + bytes(body)
        try:
            fast: Pdu | None = decode(damaged)
        except PduError:
            fast = None
        assert fast == _decode_field_by_field(damaged)


def test_status_names() -> None:
    assert status_name(ESME_RTHROTTLED) == "ESME_RTHROTTLED (0x00000058)"
    assert status_name(0x0B) == "ESME_RINVDSTADR (0x0000000B)"
    assert status_name(0x400) == "0x00000400"


# -- text -----------------------------------------------------------------------------------------

GSM7_CASES = {
    "plain": ("Hello", "48 65 6C 6C 6F"),
    "first codes": ("@£$¥", "00 01 02 03"),
    "line breaks": ("\n\r", "0A 0D"),
    "greek": ("Δ_ΦΩ", "10 11 12 15"),
    "nordic": ("ÆæßÉØøÅå", "1C 1D 1E 1F 0B 0C 0E 0F"),
    "inverted marks": ("¡¿", "40 60"),
    "upper accents": ("ÄÖÑÜ§", "5B 5C 5D 5E 5F"),
    "lower accents": ("äöñüà", "7B 7C 7D 7E 7F"),
    "euro": ("€", "1B 65"),
    "brackets": ("[x]", "1B 3C 78 1B 3E"),
    "braces": ("{}", "1B 28 1B 29"),
    "other extensions": ("^~|\\\f", "1B 14 1B 3D 1B 40 1B 2F 1B 0A"),
}


@pytest.mark.parametrize("case", GSM7_CASES)
def test_gsm7_encoding(case: str) -> None:
    text, expected = GSM7_CASES[case]
    assert gsm7_encode(text) == hx(expected)
    assert gsm7_decode(hx(expected)) == text


def test_gsm7_refuses_characters_outside_the_alphabet() -> None:
    with pytest.raises(ValueError, match="U\\+0436"):
        gsm7_encode("ж")


def test_gsm7_decode_is_tolerant() -> None:
    # Latin-1 octets under data_coding 0; an escape before a code without extension.
    assert gsm7_decode(b"caf\xe9") == "café"
    assert gsm7_decode(b"\x1b\x41") == "A"
    assert gsm7_decode(b"a\x1b") == "a "


def _gsm7_decode_by_table(data: bytes) -> str:
    """gsm7_decode's rules, one octet at a time from the tables."""
    extension = {code: char for char, code in GSM7_EXTENSION_TABLE.items()}
    out, i = [], 0
    while i < len(data):
        octet = data[i]
        i += 1
        if octet == 0x1B and i < len(data) and data[i] < 0x80:
            out.append(extension.get(data[i], GSM7_BASIC_TABLE[data[i]]))
            i += 1
        elif octet == 0x1B:
            out.append(" ")
        else:
            out.append(GSM7_BASIC_TABLE[octet] if octet < 0x80 else chr(octet))
    return "".join(out)


def test_gsm7_whole_text_agrees_with_the_tables() -> None:
    alphabet = [c for c in GSM7_BASIC_TABLE if c != "\x1b"] + list(GSM7_EXTENSION_TABLE)
    rng = random.Random(3)
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        septets = b"".join(gsm7_char(c) for c in text)
        assert gsm7_encode(text) == septets
        assert gsm7_decode(septets) == text
    for first in range(256):
        for second in (0x00, 0x0A, 0x1B, 0x20, 0x41, 0x65, 0x80, 0xE9):
            data = bytes((first, second, 0x61))
            assert gsm7_decode(data) == _gsm7_decode_by_table(data), data
    with pytest.raises(ValueError, match="U\\+0436"):
        gsm7_encode("Hello ж")


def test_gsm7_tables_agree_with_the_shared_alphabet() -> None:
    assert len(GSM7_BASIC_TABLE) == 128
    assert set(GSM7_BASIC_TABLE) - {"\x1b"} == set(gsm7.BASIC)
    assert set(GSM7_EXTENSION_TABLE) == set(gsm7.EXTENSION)


UCS2_CASES = {
    "cyrillic": ("Привет", "041F 0440 0438 0432 0435 0442"),
    "astral as surrogate pair": ("a😀", "0061 D83D DE00"),
}


@pytest.mark.parametrize("case", UCS2_CASES)
def test_ucs2_encoding(case: str) -> None:
    text, expected = UCS2_CASES[case]
    [part] = split_message(text, ref=1)
    assert (part.data_coding, part.esm_class, part.short_message) == (
        DATA_CODING_UCS2,
        0,
        hx(expected),
    )
    assert decode_text(part.short_message, DATA_CODING_UCS2) == text


def test_text_that_fits_gsm7_is_sent_as_gsm7() -> None:
    [part] = split_message("Politi: bliv indendørs €5", ref=1)
    assert part.data_coding == DATA_CODING_DEFAULT
    assert decode_text(part.short_message, DATA_CODING_DEFAULT) == "Politi: bliv indendørs €5"


# -- concatenation --------------------------------------------------------------------------------


def payloads(text: str, ref: int = 0x2A) -> list[bytes]:
    """The parts' user data without UDH, after checking each UDH."""
    parts = split_message(text, ref)
    if len(parts) == 1:
        assert parts[0].esm_class == 0
        return [parts[0].short_message]
    out = []
    for seq, part in enumerate(parts, start=1):
        assert part.esm_class == ESM_CLASS_UDHI
        assert part.short_message[:6] == bytes((0x05, 0x00, 0x03, ref, len(parts), seq))
        out.append(part.short_message[6:])
    return out


SPLIT_CASES = {
    # text -> octets of user data per part (without UDH)
    "160 gsm septets: one part": ("a" * 160, [160]),
    "161 gsm septets: 153 + 8": ("a" * 161, [153, 8]),
    "306 gsm septets: two full parts": ("a" * 306, [153, 153]),
    "extension chars count twice": ("€" * 80, [160]),
    "81 euros: ESC pair not split": ("€" * 81, [152, 10]),
    "ESC pair at the boundary moves whole": ("a" * 152 + "€" + "b" * 10, [152, 12]),
    "70 ucs2 units: one part": ("ж" * 70, [140]),
    "71 ucs2 units: 67 + 4": ("ж" * 71, [134, 8]),
    "surrogate pair at the boundary moves whole": ("ж" * 66 + "😀" + "ж" * 5, [132, 14]),
    "surrogate pairs only": ("😀" * 36, [132, 12]),
}


@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_points(case: str) -> None:
    text, sizes = SPLIT_CASES[case]
    parts = payloads(text)
    assert [len(p) for p in parts] == sizes
    coding = split_message(text, 0x2A)[0].data_coding
    # Each part decodes on its own: nothing was cut inside a character.
    assert "".join(decode_text(p, coding) for p in parts) == text


def test_concatenation_udh_bytes() -> None:
    parts = split_message("a" * 200, ref=0x1FF)  # the reference is one octet
    assert [p.short_message[:6] for p in parts] == [hx("050003FF0201"), hx("050003FF0202")]


def test_more_than_255_parts_is_refused() -> None:
    assert len(split_message("a" * 153 * 255, ref=1)) == 255
    with pytest.raises(MessageTooLong):
        split_message("a" * (153 * 255 + 1), ref=1)


UDH_CASES = {
    "8-bit reference": ("050003CC0302 4869", ConcatInfo(0xCC, 3, 2)),
    "16-bit reference": ("060804123403 01 4869", ConcatInfo(0x1234, 3, 1)),
    "other element first": ("090102AAAA 000307 0201 4869", ConcatInfo(7, 2, 1)),
    "no concatenation element": ("0401020000 4869", None),
}


@pytest.mark.parametrize("case", UDH_CASES)
def test_split_udh(case: str) -> None:
    raw, expected = UDH_CASES[case]
    info, payload = split_udh(hx(raw))
    assert info == expected
    assert payload == b"Hi"


def test_split_udh_refuses_a_udh_longer_than_the_data() -> None:
    with pytest.raises(PduError):
        split_udh(hx("0A0003"))


def test_absolute_time_is_written_in_utc() -> None:
    assert absolute_time(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "240102030405000+"
    cet = timezone(timedelta(hours=1))
    assert absolute_time(datetime(2024, 1, 2, 3, 4, 5, tzinfo=cet)) == "240102020405000+"
