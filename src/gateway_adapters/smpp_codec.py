"""SMPP 3.4 wire format: PDUs, GSM 03.38 / UCS-2 text, concatenation, absolute times.

Only what an ESME sending alerts needs (and what the SMSC simulator needs to answer it):
bind_transceiver, bind_transmitter, bind_receiver, unbind, enquire_link, submit_sm, deliver_sm
(each with its _resp) and generic_nack. Every integer is big-endian; strings are C-octet strings
(NUL terminated). Pure functions and dataclasses only: no I/O except `read_frame`, which reads
one PDU's bytes. Delivery receipts are read in `smpp_receipts`, message ids compared in `smpp_ids`.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

# -- header and command ids ----------------------------------------------------------------------

HEADER = struct.Struct(">IIII")  # command_length, command_id, command_status, sequence_number
HEADER_SIZE = HEADER.size
_LENGTH = struct.Struct(">I")  # command_length alone
# Real PDUs are a few hundred bytes; a larger length means a broken or hostile peer, and reading
# it would let that peer make us buffer arbitrary amounts.
MAX_PDU_SIZE = 64 * 1024
MAX_SEQUENCE = 0x7FFFFFFF
RESPONSE_BIT = 0x80000000

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015

INTERFACE_VERSION = 0x34

# -- command_status (SMPP 3.4 section 5.1.3) ------------------------------------------------------

ESME_ROK = 0x00000000
ESME_RINVMSGLEN = 0x00000001
ESME_RINVCMDLEN = 0x00000002
ESME_RINVCMDID = 0x00000003
ESME_RINVBNDSTS = 0x00000004
ESME_RALYBND = 0x00000005
ESME_RINVREGDLVFLG = 0x00000007
ESME_RSYSERR = 0x00000008
ESME_RINVSRCADR = 0x0000000A
ESME_RINVDSTADR = 0x0000000B
ESME_RINVMSGID = 0x0000000C
ESME_RBINDFAIL = 0x0000000D
ESME_RINVPASWD = 0x0000000E
ESME_RINVSYSID = 0x0000000F
ESME_RMSGQFUL = 0x00000014
ESME_RINVESMCLASS = 0x00000043
ESME_RSUBMITFAIL = 0x00000045
ESME_RINVSRCTON = 0x00000048
ESME_RINVSRCNPI = 0x00000049
ESME_RINVDSTTON = 0x00000050
ESME_RINVDSTNPI = 0x00000051
ESME_RINVSYSTYP = 0x00000053
ESME_RTHROTTLED = 0x00000058
ESME_RMISSINGOPTPARAM = 0x000000C3
ESME_RINVOPTPARAMVAL = 0x000000C4
ESME_RINVDCS = 0x00000104
ESME_RX_T_APPN = 0x00000064
ESME_RX_P_APPN = 0x00000065
ESME_RX_R_APPN = 0x00000066
ESME_RUNKNOWNERR = 0x000000FF

STATUS_NAMES: dict[int, str] = {
    value: name for name, value in list(globals().items()) if name.startswith("ESME_R")
}


def status_name(status: int) -> str:
    """'ESME_RTHROTTLED (0x00000058)' for a known status, else just the hex."""
    name = STATUS_NAMES.get(status)
    return f"{name} (0x{status:08X})" if name else f"0x{status:08X}"


# -- optional parameters (TLVs) and field values --------------------------------------------------

TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_SAR_MSG_REF_NUM = 0x020C  # concatenation by TLVs: reference (2 octets),
TAG_SAR_TOTAL_SEGMENTS = 0x020E  # parts (1 octet),
TAG_SAR_SEGMENT_SEQNUM = 0x020F  # and this part's number (1 octet)
TAG_SC_INTERFACE_VERSION = 0x0210
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427

ESM_CLASS_UDHI = 0x40  # short_message starts with a User Data Header
ESM_CLASS_TYPE_MASK = 0x3C
ESM_CLASS_DELIVERY_RECEIPT = 0x04

DATA_CODING_DEFAULT = 0x00  # SMSC default alphabet: GSM 03.38 for us
DATA_CODING_IA5 = 0x01
DATA_CODING_LATIN1 = 0x03
DATA_CODING_UCS2 = 0x08

TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC = 0x00, 0x01, 0x05
NPI_UNKNOWN, NPI_ISDN = 0x00, 0x01

MAX_SHORT_MESSAGE = 254  # sm_length is one octet; 255 is reserved


class PduError(ValueError):
    """Bytes that are not a valid PDU. Carries what a generic_nack answer needs."""

    def __init__(
        self,
        message: str,
        *,
        status: int = ESME_RINVCMDLEN,
        command_id: int = 0,
        sequence_number: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence_number = sequence_number


# -- field readers and writers --------------------------------------------------------------------


def c_octet(value: str, max_size: int, name: str = "field") -> bytes:
    """`value` as a C-octet string; `max_size` counts the NUL, as the specification does."""
    raw = value.encode("latin-1")
    if b"\x00" in raw:
        raise ValueError(f"{name} must not contain NUL")
    if len(raw) + 1 > max_size:
        raise ValueError(f"{name} is longer than {max_size - 1} octets")
    return raw + b"\x00"


def encode_tlvs(tlvs: Mapping[int, bytes]) -> bytes:
    return b"".join(struct.pack(">HH", tag, len(value)) + value for tag, value in tlvs.items())


class _Reader:
    """Sequential reads over a PDU body; every overrun is a `PduError`."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.remaining < 1:
            raise PduError("PDU body ends inside an integer field", status=ESME_RINVMSGLEN)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def c_octet(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise PduError("C-octet string without NUL terminator", status=ESME_RINVMSGLEN)
        value = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return value

    def octets(self, size: int) -> bytes:
        if self.remaining < size:
            raise PduError("PDU body ends inside an octet string", status=ESME_RINVMSGLEN)
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def tlvs(self) -> dict[int, bytes]:
        result: dict[int, bytes] = {}
        while self.remaining:
            if self.remaining < 4:
                raise PduError("truncated TLV header", status=ESME_RINVMSGLEN)
            tag, size = struct.unpack_from(">HH", self.data, self.pos)
            self.pos += 4
            result[tag] = self.octets(size)
        return result


def tlv_c_octet(value: bytes) -> str:
    """A TLV value that is a C-octet string (receipted_message_id); tolerant of a missing NUL."""
    return value.split(b"\x00", 1)[0].decode("latin-1")


# -- PDUs -----------------------------------------------------------------------------------------


@dataclass(kw_only=True, slots=True)
class Pdu:
    """A PDU without body: the base of all others. `command_id` is fixed per class."""

    command_id: ClassVar[int] = 0
    sequence_number: int = 0
    command_status: int = ESME_ROK

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)

    def encode_body(self) -> bytes:
        return b""

    @classmethod
    def decode_fields(cls, body: _Reader, status: int) -> dict[str, Any]:
        return {}


@dataclass(kw_only=True, slots=True)
class GenericNack(Pdu):
    command_id: ClassVar[int] = GENERIC_NACK


@dataclass(kw_only=True, slots=True)
class Unbind(Pdu):
    command_id: ClassVar[int] = UNBIND


@dataclass(kw_only=True, slots=True)
class UnbindResp(Pdu):
    command_id: ClassVar[int] = UNBIND_RESP


@dataclass(kw_only=True, slots=True)
class EnquireLink(Pdu):
    command_id: ClassVar[int] = ENQUIRE_LINK


@dataclass(kw_only=True, slots=True)
class EnquireLinkResp(Pdu):
    command_id: ClassVar[int] = ENQUIRE_LINK_RESP


@dataclass(kw_only=True, slots=True)
class Bind(Pdu):
    """bind_transceiver, bind_transmitter and bind_receiver share one layout (SMPP 3.4 4.1)."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = TON_UNKNOWN
    addr_npi: int = NPI_UNKNOWN
    address_range: str = ""

    def encode_body(self) -> bytes:
        return b"".join(
            (
                c_octet(self.system_id, 16, "system_id"),
                c_octet(self.password, 9, "password"),
                c_octet(self.system_type, 13, "system_type"),
                bytes((self.interface_version, self.addr_ton, self.addr_npi)),
                c_octet(self.address_range, 41, "address_range"),
            )
        )

    @classmethod
    def decode_fields(cls, body: _Reader, status: int) -> dict[str, Any]:
        return {
            "system_id": body.c_octet(),
            "password": body.c_octet(),
            "system_type": body.c_octet(),
            "interface_version": body.u8(),
            "addr_ton": body.u8(),
            "addr_npi": body.u8(),
            "address_range": body.c_octet(),
        }


@dataclass(kw_only=True, slots=True)
class BindResp(Pdu):
    system_id: str = ""
    sc_interface_version: int | None = None

    def encode_body(self) -> bytes:
        body = c_octet(self.system_id, 16, "system_id")
        if self.sc_interface_version is not None:
            body += encode_tlvs({TAG_SC_INTERFACE_VERSION: bytes((self.sc_interface_version,))})
        return body

    @classmethod
    def decode_fields(cls, body: _Reader, status: int) -> dict[str, Any]:
        if not body.remaining and status != ESME_ROK:
            return {}  # an error answer may omit the body
        system_id = body.c_octet()
        version = body.tlvs().get(TAG_SC_INTERFACE_VERSION)
        return {"system_id": system_id, "sc_interface_version": version[0] if version else None}


@dataclass(kw_only=True, slots=True)
class BindTransceiver(Bind):
    command_id: ClassVar[int] = BIND_TRANSCEIVER


@dataclass(kw_only=True, slots=True)
class BindTransceiverResp(BindResp):
    command_id: ClassVar[int] = BIND_TRANSCEIVER_RESP


@dataclass(kw_only=True, slots=True)
class BindTransmitter(Bind):
    command_id: ClassVar[int] = BIND_TRANSMITTER


@dataclass(kw_only=True, slots=True)
class BindTransmitterResp(BindResp):
    command_id: ClassVar[int] = BIND_TRANSMITTER_RESP


@dataclass(kw_only=True, slots=True)
class BindReceiver(Bind):
    command_id: ClassVar[int] = BIND_RECEIVER


@dataclass(kw_only=True, slots=True)
class BindReceiverResp(BindResp):
    command_id: ClassVar[int] = BIND_RECEIVER_RESP


# Each bind and the answer it gets.
BIND_ANSWERS: dict[type[Bind], type[BindResp]] = {
    BindTransceiver: BindTransceiverResp,
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
}


@dataclass(kw_only=True, slots=True)
class _MessageIdResp(Pdu):
    message_id: str = ""

    def encode_body(self) -> bytes:
        return c_octet(self.message_id, 65, "message_id")

    @classmethod
    def decode_fields(cls, body: _Reader, status: int) -> dict[str, Any]:
        if not body.remaining:
            return {}  # error answers (and some deliver_sm_resp) omit the body
        return {"message_id": body.c_octet()}


@dataclass(kw_only=True, slots=True)
class SubmitSmResp(_MessageIdResp):
    command_id: ClassVar[int] = SUBMIT_SM_RESP


@dataclass(kw_only=True, slots=True)
class DeliverSmResp(_MessageIdResp):
    command_id: ClassVar[int] = DELIVER_SM_RESP


@dataclass(kw_only=True, slots=True)
class _ShortMessagePdu(Pdu):
    """submit_sm and deliver_sm share one layout (SMPP 3.4 sections 4.4.1 and 4.6.1)."""

    service_type: str = ""
    source_addr_ton: int = TON_UNKNOWN
    source_addr_npi: int = NPI_UNKNOWN
    source_addr: str = ""
    dest_addr_ton: int = TON_UNKNOWN
    dest_addr_npi: int = NPI_UNKNOWN
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = DATA_CODING_DEFAULT
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def encode_body(self) -> bytes:
        if len(self.short_message) > MAX_SHORT_MESSAGE:
            raise ValueError(f"short_message is longer than {MAX_SHORT_MESSAGE} octets")
        return b"".join(
            (
                c_octet(self.service_type, 6, "service_type"),
                bytes((self.source_addr_ton, self.source_addr_npi)),
                c_octet(self.source_addr, 21, "source_addr"),
                bytes((self.dest_addr_ton, self.dest_addr_npi)),
                c_octet(self.destination_addr, 21, "destination_addr"),
                bytes((self.esm_class, self.protocol_id, self.priority_flag)),
                c_octet(self.schedule_delivery_time, 17, "schedule_delivery_time"),
                c_octet(self.validity_period, 17, "validity_period"),
                bytes(
                    (
                        self.registered_delivery,
                        self.replace_if_present_flag,
                        self.data_coding,
                        self.sm_default_msg_id,
                        len(self.short_message),
                    )
                ),
                self.short_message,
                encode_tlvs(self.tlvs),
            )
        )

    @classmethod
    def decode_fields(cls, body: _Reader, status: int) -> dict[str, Any]:
        # Field by field, each overrun a precise PduError: `decode` reads well-formed
        # submit_sm/deliver_sm with `_read_short_message` and comes here only for the error.
        values: dict[str, Any] = {
            "service_type": body.c_octet(),
            "source_addr_ton": body.u8(),
            "source_addr_npi": body.u8(),
            "source_addr": body.c_octet(),
            "dest_addr_ton": body.u8(),
            "dest_addr_npi": body.u8(),
            "destination_addr": body.c_octet(),
            "esm_class": body.u8(),
            "protocol_id": body.u8(),
            "priority_flag": body.u8(),
            "schedule_delivery_time": body.c_octet(),
            "validity_period": body.c_octet(),
            "registered_delivery": body.u8(),
            "replace_if_present_flag": body.u8(),
            "data_coding": body.u8(),
            "sm_default_msg_id": body.u8(),
        }
        values["short_message"] = body.octets(body.u8())
        values["tlvs"] = body.tlvs()
        return values

    @property
    def message_bytes(self) -> bytes:
        """The user data: short_message, or message_payload when short_message is empty."""
        return self.short_message or self.tlvs.get(TAG_MESSAGE_PAYLOAD, b"")


_ShortMessageT = TypeVar("_ShortMessageT", bound="_ShortMessagePdu")

# submit_sm/deliver_sm up to short_message: service_type, source TON/NPI and address, destination
# TON/NPI and address, esm_class/protocol_id/priority_flag, schedule_delivery_time,
# validity_period, and registered_delivery .. sm_length (five octets).
_SHORT_MESSAGE_HEAD = re.compile(
    rb"([^\0]*)\0(..)([^\0]*)\0(..)([^\0]*)\0(...)([^\0]*)\0([^\0]*)\0(.....)", re.S
)


def _read_short_message(
    cls: type[_ShortMessageT], frame: bytes, status: int, sequence: int
) -> _ShortMessageT | None:
    """A submit_sm/deliver_sm read in one go (the receipt path reads tens of thousands a
    second); None when the body is malformed, for the careful reading to explain."""
    head = _SHORT_MESSAGE_HEAD.match(frame, HEADER_SIZE)
    if head is None:  # a missing NUL, or the body ends inside the fields
        return None
    service_type, source, source_addr, dest, destination_addr, flags, schedule, validity, tail = (
        head.groups()
    )
    start = head.end()
    end = start + tail[4]  # sm_length
    if end > len(frame):
        return None
    tlvs: dict[int, bytes] = {}
    if end < len(frame):
        try:
            tlvs = _Reader(frame, end).tlvs()
        except PduError:
            return None
    # Every field is set here: what __init__ does, without the cost of its twenty keyword
    # arguments (tests/test_smpp_codec.py compares the result with a PDU built the usual way).
    pdu = cls.__new__(cls)
    pdu.sequence_number = sequence
    pdu.command_status = status
    pdu.service_type = service_type.decode("latin-1")
    pdu.source_addr_ton, pdu.source_addr_npi = source
    pdu.source_addr = source_addr.decode("latin-1")
    pdu.dest_addr_ton, pdu.dest_addr_npi = dest
    pdu.destination_addr = destination_addr.decode("latin-1")
    pdu.esm_class, pdu.protocol_id, pdu.priority_flag = flags
    pdu.schedule_delivery_time = schedule.decode("latin-1")
    pdu.validity_period = validity.decode("latin-1")
    pdu.registered_delivery = tail[0]
    pdu.replace_if_present_flag = tail[1]
    pdu.data_coding = tail[2]
    pdu.sm_default_msg_id = tail[3]
    pdu.short_message = frame[start:end]
    pdu.tlvs = tlvs
    return pdu


@dataclass(kw_only=True, slots=True)
class SubmitSm(_ShortMessagePdu):
    command_id: ClassVar[int] = SUBMIT_SM


@dataclass(kw_only=True, slots=True)
class DeliverSm(_ShortMessagePdu):
    command_id: ClassVar[int] = DELIVER_SM


@dataclass(kw_only=True, slots=True)
class UnknownPdu(Pdu):
    """A command we do not implement; the receiver answers it with generic_nack."""

    unknown_command_id: int = 0
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.unknown_command_id & RESPONSE_BIT)

    def encode_body(self) -> bytes:
        return self.body


PDU_TYPES: dict[int, type[Pdu]] = {
    cls.command_id: cls
    for cls in (
        GenericNack,
        BindTransceiver,
        BindTransceiverResp,
        BindTransmitter,
        BindTransmitterResp,
        BindReceiver,
        BindReceiverResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        Unbind,
        UnbindResp,
        EnquireLink,
        EnquireLinkResp,
    )
}


def encode(pdu: Pdu) -> bytes:
    """The PDU's bytes, header included."""
    body = pdu.encode_body()
    command_id = pdu.unknown_command_id if isinstance(pdu, UnknownPdu) else pdu.command_id
    header = HEADER.pack(
        HEADER_SIZE + len(body), command_id, pdu.command_status, pdu.sequence_number
    )
    return header + body


def decode(frame: bytes) -> Pdu:
    """One whole PDU (header included) from bytes; `PduError` when malformed."""
    if len(frame) < HEADER_SIZE:
        raise PduError(f"PDU shorter than its header ({len(frame)} octets)")
    length, command_id, status, sequence = HEADER.unpack_from(frame)
    if length != len(frame):
        raise PduError(
            f"command_length {length} but {len(frame)} octets",
            command_id=command_id,
            sequence_number=sequence,
        )
    cls = PDU_TYPES.get(command_id)
    if cls is DeliverSm or cls is SubmitSm:
        pdu = _read_short_message(cls, frame, status, sequence)
        if pdu is not None:
            return pdu
    if cls is None:
        return UnknownPdu(
            sequence_number=sequence,
            command_status=status,
            unknown_command_id=command_id,
            body=bytes(frame[HEADER_SIZE:]),
        )
    body = _Reader(frame, HEADER_SIZE)
    try:
        values = cls.decode_fields(body, status)
    except PduError as exc:
        exc.command_id, exc.sequence_number = command_id, sequence
        raise
    # Octets left over (a newer peer's TLVs on a response) are ignored: be liberal in reading.
    return cls(sequence_number=sequence, command_status=status, **values)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The bytes of the next PDU on the stream; `asyncio.IncompleteReadError` at EOF.

    A `PduError` here means the stream cannot be resynchronised: close the connection.
    """
    head = await reader.readexactly(HEADER_SIZE)
    length = struct.unpack_from(">I", head)[0]
    if not HEADER_SIZE <= length <= MAX_PDU_SIZE:
        raise PduError(f"command_length {length} out of range")
    return head + await reader.readexactly(length - HEADER_SIZE)


class FrameReader:
    """Whole PDUs from a stream, as many as have arrived: one read and one call per burst
    rather than two reads per PDU (`read_frame`), for the receipt path's tens of thousands a
    second. The same errors as `read_frame`: `asyncio.IncompleteReadError` at EOF, `PduError`
    for a length that cannot be (the stream cannot be resynchronised: close it)."""

    def __init__(self, reader: asyncio.StreamReader, chunk: int = 256 * 1024) -> None:
        self.reader = reader
        self.chunk = chunk
        self._rest = b""  # the start of a PDU whose other octets have not arrived yet

    async def frames(self) -> list[bytes]:
        """The next PDUs (at least one), header included, in arrival order."""
        unpack = _LENGTH.unpack_from
        while True:
            data = self._rest
            frames: list[bytes] = []
            start, size = 0, len(data)
            while size - start >= HEADER_SIZE:
                (length,) = unpack(data, start)
                if not HEADER_SIZE <= length <= MAX_PDU_SIZE:
                    raise PduError(f"command_length {length} out of range")
                if size - start < length:
                    break
                frames.append(data[start : start + length])
                start += length
            self._rest = data[start:] if start else data
            if frames:
                return frames
            more = await self.reader.read(self.chunk)
            if not more:
                raise asyncio.IncompleteReadError(self._rest, None)
            self._rest += more


def encode_response(command_id: int, sequence_number: int, status: int = ESME_ROK) -> bytes:
    """A response with an empty message_id (deliver_sm_resp, submit_sm_resp refusing) or no
    body at all (enquire_link_resp, unbind_resp, generic_nack), without building a Pdu: what
    `encode` gives for that PDU class."""
    body = b"\x00" if command_id in (DELIVER_SM_RESP, SUBMIT_SM_RESP) else b""
    return HEADER.pack(HEADER_SIZE + len(body), command_id, status, sequence_number) + body


def pdu_fields(pdu: Pdu) -> dict[str, Any]:
    """The PDU's fields as a dict (for tests and debug logging)."""
    return {f.name: getattr(pdu, f.name) for f in fields(pdu)}


# -- GSM 03.38 default alphabet and UCS-2 ---------------------------------------------------------

# Index = septet value. 0x1B is the escape to the extension table (kept as "\x1b" placeholder).
GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_ESCAPE = 0x1B
GSM7_EXTENSION_TABLE: dict[str, int] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_BASIC_CODES = {char: code for code, char in enumerate(GSM7_BASIC_TABLE) if code != 0x1B}
_GSM7_EXTENSION_CHARS = {code: char for char, code in GSM7_EXTENSION_TABLE.items()}

GSM7_SINGLE_MAX = 160  # septets in one SMS
GSM7_PART_MAX = 153  # septets per part next to a 6-octet concatenation UDH
UCS2_SINGLE_MAX = 140  # octets (70 UTF-16 units)
UCS2_PART_MAX = 134  # octets (67 UTF-16 units)
MAX_PARTS = 255  # the UDH counts parts in one octet


# The fast paths: one regex search finds a character outside the alphabet, and str.translate
# maps characters to septets (or septets to characters) in C rather than one Python call each.
_NOT_GSM7 = re.compile(
    "[^" + re.escape("".join(_GSM7_BASIC_CODES) + "".join(GSM7_EXTENSION_TABLE)) + "]"
)
_GSM7_ENCODE_MAP: dict[int, str] = {ord(c): chr(code) for c, code in _GSM7_BASIC_CODES.items()}
_GSM7_ENCODE_MAP.update(
    {ord(c): chr(GSM7_ESCAPE) + chr(code) for c, code in GSM7_EXTENSION_TABLE.items()}
)
# Octets without an escape among them: the basic table, and Latin-1 above 0x7F (identity).
_GSM7_DECODE_MAP: dict[int, str] = dict(enumerate(GSM7_BASIC_TABLE))
# The octets that are the same character in GSM 03.38 as in ASCII (space, digits, letters and
# most punctuation): text of only these decodes as ASCII, like most receipts.
_GSM7_AS_ASCII = bytes(
    code for code, char in enumerate(GSM7_BASIC_TABLE) if ord(char) == code and code != GSM7_ESCAPE
)


def fits_gsm7(text: str) -> bool:
    return _NOT_GSM7.search(text) is None


def gsm7_char(char: str) -> bytes:
    """One character as unpacked septets: one octet, or ESC + code for the extension table."""
    code = _GSM7_BASIC_CODES.get(char)
    if code is not None:
        return bytes((code,))
    ext = GSM7_EXTENSION_TABLE.get(char)
    if ext is None:
        raise ValueError(f"character U+{ord(char):04X} is not in the GSM 03.38 alphabet")
    return bytes((GSM7_ESCAPE, ext))


def gsm7_encode(text: str) -> bytes:
    """Unpacked GSM 03.38 septets, one per octet, as SMSCs expect over SMPP."""
    outside = _NOT_GSM7.search(text)
    if outside is not None:
        gsm7_char(outside.group())  # raises the ValueError naming the character
    return text.translate(_GSM7_ENCODE_MAP).encode("latin-1")


def gsm7_decode(data: bytes) -> str:
    """Inverse of `gsm7_encode`, tolerant: octets above 0x7F are read as Latin-1 (some SMSCs send
    Latin-1 under data_coding 0); an escape before an unknown code yields the basic character."""
    if not data.translate(None, _GSM7_AS_ASCII):
        return data.decode("ascii")
    if GSM7_ESCAPE not in data:
        return data.decode("latin-1").translate(_GSM7_DECODE_MAP)
    out: list[str] = []
    i = 0
    while i < len(data):
        octet = data[i]
        i += 1
        if octet == GSM7_ESCAPE and i < len(data) and data[i] < 0x80:
            ext = data[i]
            i += 1
            out.append(_GSM7_EXTENSION_CHARS.get(ext, GSM7_BASIC_TABLE[ext]))
        elif octet == GSM7_ESCAPE:
            out.append(" ")  # a dangling escape: nothing sensible to show
        elif octet < 0x80:
            out.append(GSM7_BASIC_TABLE[octet])
        else:
            out.append(chr(octet))
    return "".join(out)


def ucs2_char(char: str) -> bytes:
    # Astral characters become a surrogate pair (4 octets), which handsets read as UTF-16.
    return char.encode("utf-16-be", errors="replace")


def decode_text(data: bytes, data_coding: int) -> str:
    """User data as text for the data codings we meet; unknown codings are read as Latin-1."""
    if data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == DATA_CODING_DEFAULT:
        return gsm7_decode(data)
    if data_coding == DATA_CODING_IA5:
        return data.decode("ascii", errors="replace")
    return data.decode("latin-1")


# -- concatenation --------------------------------------------------------------------------------


class MessageTooLong(ValueError):
    """The text needs more than 255 concatenated parts."""


@dataclass(frozen=True, slots=True)
class MessagePart:
    """One submit_sm's worth of a text: its data_coding, esm_class and short_message."""

    data_coding: int
    esm_class: int
    short_message: bytes


def concat_udh(ref: int, total: int, seq: int) -> bytes:
    """The 6-octet UDH: length 05, IEI 00 (8-bit reference), IEI length 03, ref, total, seq."""
    return bytes((0x05, 0x00, 0x03, ref & 0xFF, total, seq))


def split_message(text: str, ref: int) -> list[MessagePart]:
    """The text as submit_sm parts: GSM-7 if every character fits, else UCS-2.

    One part up to 160 GSM septets / 70 UTF-16 units; beyond that parts of at most 153 / 67 with a
    concatenation UDH carrying `ref`. Parts break between characters only, so an ESC pair or a
    surrogate pair is never split (such a part is one unit short).
    """
    if fits_gsm7(text):
        coding, chars = DATA_CODING_DEFAULT, [gsm7_char(c) for c in text]
        single, per_part = GSM7_SINGLE_MAX, GSM7_PART_MAX
    else:
        coding, chars = DATA_CODING_UCS2, [ucs2_char(c) for c in text]
        single, per_part = UCS2_SINGLE_MAX, UCS2_PART_MAX
    if sum(len(c) for c in chars) <= single:
        return [MessagePart(coding, 0, b"".join(chars))]

    chunks: list[bytes] = []
    current = bytearray()
    for encoded in chars:
        if len(current) + len(encoded) > per_part:
            chunks.append(bytes(current))
            current.clear()
        current += encoded
    chunks.append(bytes(current))
    if len(chunks) > MAX_PARTS:
        raise MessageTooLong(f"text needs {len(chunks)} parts; at most {MAX_PARTS} are possible")
    total = len(chunks)
    return [
        MessagePart(coding, ESM_CLASS_UDHI, concat_udh(ref, total, seq) + chunk)
        for seq, chunk in enumerate(chunks, start=1)
    ]


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    ref: int
    total: int
    seq: int


def split_udh(user_data: bytes) -> tuple[ConcatInfo | None, bytes]:
    """(concatenation info or None, payload) of user data that starts with a UDH.

    Knows IEI 0x00 (8-bit reference) and 0x08 (16-bit reference); other IEs are skipped.
    """
    if not user_data:
        raise PduError("UDHI set but no user data", status=ESME_RINVESMCLASS)
    udh_len = user_data[0]
    if udh_len + 1 > len(user_data):
        raise PduError("UDH longer than the user data", status=ESME_RINVESMCLASS)
    udh, payload = user_data[1 : udh_len + 1], user_data[udh_len + 1 :]
    info: ConcatInfo | None = None
    i = 0
    while i + 2 <= len(udh):
        iei, size = udh[i], udh[i + 1]
        value = udh[i + 2 : i + 2 + size]
        if len(value) != size:
            raise PduError("truncated UDH information element", status=ESME_RINVESMCLASS)
        if iei == 0x00 and size == 3:
            info = ConcatInfo(value[0], value[1], value[2])
        elif iei == 0x08 and size == 4:
            info = ConcatInfo((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + size
    return info, payload


def sar_info(tlvs: Mapping[int, bytes]) -> ConcatInfo | None:
    """Concatenation by the sar_* TLVs (SMPP 3.4 section 5.3.2.22-24), or None without them.
    Some but not all of the three, or one of the wrong length, is a `PduError`."""
    ref = tlvs.get(TAG_SAR_MSG_REF_NUM)
    total = tlvs.get(TAG_SAR_TOTAL_SEGMENTS)
    seq = tlvs.get(TAG_SAR_SEGMENT_SEQNUM)
    if ref is None and total is None and seq is None:
        return None
    if ref is None or total is None or seq is None:
        raise PduError("sar_* TLVs incomplete", status=ESME_RMISSINGOPTPARAM)
    if len(ref) != 2 or len(total) != 1 or len(seq) != 1 or not 1 <= seq[0] <= total[0]:
        raise PduError("sar_* TLV of the wrong size or value", status=ESME_RINVOPTPARAMVAL)
    return ConcatInfo(int.from_bytes(ref, "big"), total[0], seq[0])


# -- times --------------------------------------------------------------------------------------


def absolute_time(moment: datetime) -> str:
    """SMPP absolute time 'YYMMDDhhmmsstnnp' (section 7.1.1), written in UTC: tenths 0, offset
    00 quarter hours, '+'. Used for validity_period."""
    return f"{moment.astimezone(UTC):%y%m%d%H%M%S}000+"
