"""SMPP 3.4's numbers: the header's layout, command ids, command_status values (with their
names), TLV tags and field values; and `PduError`, for bytes that are not a PDU (it carries the
status a generic_nack answers with). `smpp_codec` offers all of them under its own name too.
"""

from __future__ import annotations

import struct

# -- header and command ids ----------------------------------------------------------------------

HEADER = struct.Struct(">IIII")  # command_length, command_id, command_status, sequence_number
HEADER_SIZE = HEADER.size
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
