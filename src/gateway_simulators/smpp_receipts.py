"""The SMSC simulator's delivery receipts: what it keeps of each, and the deliver_sm it writes for
one (built from parts encoded when the receipt is created: the simulator is the load generator of
the receipt benchmark)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway_adapters.smpp_codec import (
    DATA_CODING_DEFAULT,
    DATA_CODING_UCS2,
    DELIVER_SM,
    ESM_CLASS_DELIVERY_RECEIPT,
    ESME_ROK,
    HEADER,
    HEADER_SIZE,
    MAX_SHORT_MESSAGE,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    c_octet,
    encode_tlvs,
)
from gateway_adapters.smpp_receipts import receipt_head, receipt_time

STAT_STATE_VALUES = {"DELIVRD": 2, "UNDELIV": 5}  # message_state TLV values
FAILURE_ERR = "069"


@dataclass
class Receipt:
    submit_id: str  # the id as submit_sm_resp gave it
    text_id: str  # the id as the receipt text writes it
    recipient: str
    recipient_ton: int
    recipient_npi: int
    sender: str
    sender_ton: int
    sender_npi: int
    stat: str
    submitted: datetime
    snippet: str
    attempts: int = 0
    # Encoded once, at creation: the deliver_sm fields before esm_class (source and destination
    # address), the submit date as receipts write it, the receipt's data_coding (ASCII, or UCS-2
    # when the snippet has characters ASCII lacks: they stay readable) and the snippet in it.
    addresses: bytes = b""
    submit_date: str = ""
    data_coding: int = DATA_CODING_DEFAULT
    snippet_octets: bytes = b""

    def __post_init__(self) -> None:
        # The receipt goes back from the recipient to the sender (c_octet checks the lengths).
        self.addresses = b"".join(
            (
                b"\x00",  # service_type
                bytes((self.recipient_ton, self.recipient_npi)),
                c_octet(self.recipient, 21, "source_addr"),
                bytes((self.sender_ton, self.sender_npi)),
                c_octet(self.sender, 21, "destination_addr"),
            )
        )
        self.submit_date = receipt_time(self.submitted)
        if self.snippet.isascii():
            self.snippet_octets = self.snippet.encode("ascii")
        else:
            self.data_coding = DATA_CODING_UCS2
            self.snippet_octets = self.snippet.encode("utf-16-be")


def receipt_frame(receipt: Receipt, sequence: int, done_date: str, tlvs_wanted: bool) -> bytes:
    """The deliver_sm of a receipt, encoded: what `encode` gives for the DeliverSm with these
    fields, built from the parts encoded when the receipt was created."""
    delivered = receipt.stat == "DELIVRD"
    head = receipt_head(
        receipt.text_id,
        receipt.stat,
        "000" if delivered else FAILURE_ERR,
        receipt.submit_date,
        done_date,
        delivered,
    )
    coding = receipt.data_coding
    encoding = "ascii" if coding == DATA_CODING_DEFAULT else "utf-16-be"
    short_message = head.encode(encoding) + receipt.snippet_octets
    tlvs = b""
    if tlvs_wanted:
        tlvs = encode_tlvs(
            {
                TAG_RECEIPTED_MESSAGE_ID: receipt.submit_id.encode("latin-1") + b"\x00",
                TAG_MESSAGE_STATE: bytes((STAT_STATE_VALUES[receipt.stat],)),
            }
        )
    if len(short_message) > MAX_SHORT_MESSAGE:  # a long id in UCS-2: in message_payload
        tlvs += encode_tlvs({TAG_MESSAGE_PAYLOAD: short_message})
        short_message = b""
    body = b"".join(
        (
            receipt.addresses,
            # esm_class, protocol_id, priority_flag; no schedule or validity
            bytes((ESM_CLASS_DELIVERY_RECEIPT, 0, 0, 0, 0)),
            # registered_delivery, replace_if_present, data_coding, sm_default_msg_id, length
            bytes((0, 0, coding, 0, len(short_message))),
            short_message,
            tlvs,
        )
    )
    return HEADER.pack(HEADER_SIZE + len(body), DELIVER_SM, ESME_ROK, sequence) + body
