"""The SMSC simulator's mobile-originated messages: a citizen's SMS as the deliver_sm an SMSC
sends for it, one, or one per part when it is long (concatenated by a UDH or by sar_* TLVs)."""

from __future__ import annotations

from gateway_adapters.smpp_codec import (
    ESM_CLASS_UDHI,
    NPI_ISDN,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    TON_INTERNATIONAL,
    DeliverSm,
)
from gateway_adapters.smpp_text import split_message, split_udh

CONCAT = ("udh", "sar")


def mo_pdus(
    sender: str, recipient: str, text: str, *, concat: str = "udh", ref: int = 1
) -> list[DeliverSm]:
    """The deliver_sm for `text` from `sender` (international digits, TON 1) to `recipient`:
    GSM 03.38 if it fits, else UCS-2; beyond one SMS, one per part, concatenated by a UDH
    (`concat="udh"`) or by sar_* TLVs (`"sar"`, 16-bit reference `ref`)."""
    if concat not in CONCAT:
        raise ValueError(f"concat must be one of {', '.join(CONCAT)}")
    parts = split_message(text, ref)
    pdus = []
    for seq, part in enumerate(parts, start=1):
        esm_class, data, tlvs = part.esm_class, part.short_message, {}
        if concat == "sar" and part.esm_class & ESM_CLASS_UDHI:
            _, data = split_udh(data)
            esm_class &= ~ESM_CLASS_UDHI
            tlvs = {
                TAG_SAR_MSG_REF_NUM: ref.to_bytes(2, "big"),
                TAG_SAR_TOTAL_SEGMENTS: bytes((len(parts),)),
                TAG_SAR_SEGMENT_SEQNUM: bytes((seq,)),
            }
        pdus.append(
            DeliverSm(
                source_addr_ton=TON_INTERNATIONAL,
                source_addr_npi=NPI_ISDN,
                source_addr=sender,
                destination_addr=recipient,
                esm_class=esm_class,
                data_coding=part.data_coding,
                short_message=data,
                tlvs=tlvs,
            )
        )
    return pdus
