"""How the SMSC simulator behaves (`SmscOptions`) and what it counts (`SmscStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SmscOptions:
    """How the simulated SMSC behaves."""

    system_id: str = "sim"
    password: str = "sim-pass"
    latency_ms: float = 0.0  # before each submit_sm_resp
    throttle_ratio: float = 0.0  # submit_sm answered ESME_RTHROTTLED
    invalid_ratio: float = 0.0  # submit_sm answered ESME_RINVDSTADR
    delivered_ratio: float = 1.0  # receipts DELIVRD, the rest UNDELIV
    receipt_delay_ms: float = 200.0
    hold_receipts: bool = False  # keep receipts until release()
    # How the SMSC writes a message's id: a format for its number (the first is first_message_id)
    # in submit_sm_resp and in the receipt text. The default is the style Kannel's msg-id-type 1
    # names: upper-case hex in submit_sm_resp, zero-padded decimal in the receipt text.
    submit_id_format: str = "{:08X}"
    receipt_id_format: str = "{:010d}"
    first_message_id: int = 0x0A000001  # hex '0A000001', decimal '0167772161': padding in both
    # receipted_message_id (the id exactly as submit_sm_resp gave it, SMPP 3.4 section 5.3.2.12)
    # and message_state TLVs on every receipt, as SMPP 3.4 SMSCs send them
    receipt_tlvs: bool = True
    redelivery_delay_ms: float = 100.0  # after a refused receipt
    response_timeout_ms: float = 10_000.0  # for deliver_sm_resp; then the receipt goes again
    receipt_window: int = 10  # deliver_sm awaiting their answer at once
    seed: int | None = None


@dataclass
class SmscStats:
    connections: int = 0
    binds: int = 0
    bind_failures: int = 0
    unbinds: int = 0
    enquire_links: int = 0  # enquire_link received from clients
    submits: int = 0  # submit_sm received (each part counts)
    accepted: int = 0  # parts answered ESME_ROK
    throttled: int = 0
    invalid: int = 0
    max_in_flight: int = 0  # most submit_sm received and not yet answered on one connection
    receipts_sent: int = 0  # deliver_sm written, redeliveries included
    receipts_acked: int = 0
    receipts_refused: int = 0  # answered with an error status
    receipts_unanswered: int = 0  # connection lost or answer timed out
    max_receipts_out: int = 0  # most deliver_sm awaiting their answer at once (the window)
    mo_sent: int = 0  # mobile-originated deliver_sm sent (each part counts)
    bind_roles: dict[str, int] = field(default_factory=dict)  # binds by role
