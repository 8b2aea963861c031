"""SMPP 3.4 wire format: PDUs, their fields and TLVs, absolute times.

Only what an ESME sending alerts needs (and what the SMSC simulator needs to answer it):
bind_transceiver, bind_transmitter, bind_receiver, unbind, enquire_link, submit_sm, deliver_sm
(each with its _resp) and generic_nack. Every integer is big-endian; strings are C-octet strings
(NUL terminated). Pure functions and dataclasses only: the numbers (command ids, statuses, tags)
are in `smpp_numbers`, reading PDUs off a stream in `smpp_frames`; both are offered here too, so
that this module names the whole wire format. Text encodings and concatenation are in
`smpp_text`, delivery receipts are read in `smpp_receipts`, message ids compared in `smpp_ids`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

# Re-exported: the wire format's names, wherever they are defined.
from gateway_adapters.smpp_frames import *  # noqa: F403
from gateway_adapters.smpp_numbers import *  # noqa: F403
from gateway_adapters.smpp_numbers import (
    BIND_RECEIVER,
    BIND_RECEIVER_RESP,
    BIND_TRANSCEIVER,
    BIND_TRANSCEIVER_RESP,
    BIND_TRANSMITTER,
    BIND_TRANSMITTER_RESP,
    DATA_CODING_DEFAULT,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESME_RINVMSGLEN,
    ESME_ROK,
    GENERIC_NACK,
    HEADER,
    HEADER_SIZE,
    INTERFACE_VERSION,
    MAX_SHORT_MESSAGE,
    NPI_UNKNOWN,
    RESPONSE_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TAG_MESSAGE_PAYLOAD,
    TAG_SC_INTERFACE_VERSION,
    TON_UNKNOWN,
    UNBIND,
    UNBIND_RESP,
    PduError,
)

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


def encode_response(command_id: int, sequence_number: int, status: int = ESME_ROK) -> bytes:
    """A response with an empty message_id (deliver_sm_resp, submit_sm_resp refusing) or no
    body at all (enquire_link_resp, unbind_resp, generic_nack), without building a Pdu: what
    `encode` gives for that PDU class."""
    body = b"\x00" if command_id in (DELIVER_SM_RESP, SUBMIT_SM_RESP) else b""
    return HEADER.pack(HEADER_SIZE + len(body), command_id, status, sequence_number) + body


def pdu_fields(pdu: Pdu) -> dict[str, Any]:
    """The PDU's fields as a dict (for tests and debug logging)."""
    return {f.name: getattr(pdu, f.name) for f in fields(pdu)}


# -- times --------------------------------------------------------------------------------------


def absolute_time(moment: datetime) -> str:
    """SMPP absolute time 'YYMMDDhhmmsstnnp' (section 7.1.1), written in UTC: tenths 0, offset
    00 quarter hours, '+'. Used for validity_period."""
    return f"{moment.astimezone(UTC):%y%m%d%H%M%S}000+"
