"""SMPP 3.4 adapter: a bind_transceiver connection (or a bind_transmitter and bind_receiver
pair) over asyncio streams, submit_sm with a window, delivery receipts as deliver_sm acknowledged
only after they are committed.

Configuration (`[[gateways]]` with `type = "smpp"`):
- `base_url = "smpp://host:port"` (port 2775 if omitted), `token = "system_id:password"`;
- `sender`: the source address; alphanumeric -> TON 5 / NPI 0, digits -> TON 1 / NPI 1;
- `timeout_seconds`: connect, bind and per-PDU response timeout.
- `window = N`: unacknowledged submit_sm in flight (the SMSC account's window; default 10).
- `bind_mode`: "transceiver" (default), or "transmitter_receiver": submit_sm go through a
  transmitter, receipts and inbound messages arrive on a receiver; each connection is kept up
  and bound again on its own (`_maintain`, one per role).

The other SMPP options (keepalive, reconnect backoff, message id bases, registered_delivery,
receipt batching, the gateway's own receipt status words) are class attributes listed in
`SmppAdapter.options`; each can be set in the gateway's entry, or by a keyword argument to the
constructor. How receipts are read (texts, dates, status words) is in `smpp_receipts`.

The adapter is in parts: the entry read in `smpp_config`, the connections kept bound in
`smpp_connections`, sending through the window in `smpp_submit`, receipts and inbound messages
taken in `smpp_inbound`; this module holds the settings and puts the parts together.

Receipts: `receipt_concurrency` workers per connection each take what arrived (up to
`receipt_batch`), commit it through on_receipts and only then answer those deliver_sm; while one
batch commits, the next is read and committed beside it. The SMSC's window for deliver_sm bounds
how many are in our hands at once, so it bounds the batches too: the receipt rate is about that
window divided by the time from the SMSC's send to our answer.

Ids: SMSCs write a message's id in submit_sm_resp and in the receipt in different bases, cases and
paddings. A delivery is stored under `smpp_ids.message_key` of its submit_sm_resp id (the id as
written, lower case, without leading zeros); a receipt finds it through receipted_message_id, or
through its text id read in the gateway's id style: `submit_id_base` and `receipt_id_base` when
configured (in the spirit of Kannel's msg-id-type), else learned from the first receipts that only
one reading explains, and then kept (`smpp_inbound` has how; a receipt is never placed by a guess).

Inbound messages (a deliver_sm that is not a receipt) are decoded, reassembled from their parts
(UDH or sar_*), handed to the receipt sink's `inbound` and answered once it returned, so the
SMSC sends them again if they were not committed (`smpp_mo`).

Receipts carry `phone=None`: an SMPP message id names one recipient's message on its own, and
SMSCs differ in how they write the receipt's source_addr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway_adapters.base import (
    AdapterLimits,
    CallbackRejected,
    GatewayConfig,
    InboundMessage,
    OptionTypes,
    ReceiptUpdate,
)
from gateway_adapters.smpp_config import SmppConfigError, parse_config
from gateway_adapters.smpp_connections import BIND_MODES, SmppConnections
from gateway_adapters.smpp_inbound import Inbound
from gateway_adapters.smpp_link import Link
from gateway_adapters.smpp_receipts import status_words as receipt_status_words
from gateway_adapters.smpp_submit import SmppSubmitting

__all__ = ["SmppAdapter", "SmppConfigError"]


class SmppAdapter(SmppConnections, SmppSubmitting):
    """`GatewayAdapter` for an SMSC speaking SMPP 3.4 (bind_transceiver)."""

    type: ClassVar[str] = "smpp"
    # One recipient per submit_sm, over one bound connection; the operator sets the rate.
    limits: ClassVar[AdapterLimits] = AdapterLimits(1, None, None)
    # Every option below can be set in the gateway's `[[gateways]]` entry or, for tests, by a
    # keyword argument to the constructor (which wins).
    options: ClassVar[OptionTypes] = {
        "window": int,
        "bind_mode": str,
        "enquire_link_interval": float,
        "enquire_link_timeout": float,
        "reconnect_initial": float,
        "reconnect_max": float,
        "submit_id_base": int,
        "receipt_id_base": int,
        "registered_delivery": int,
        "receipt_batch": int,
        "receipt_concurrency": int,
        "status_words": dict[str, str],
        "mo_country_code": str,
        "mo_part_seconds": float,
    }

    # Defaults of the SMPP options (see the module docstring for why they are not in the file).
    window: int = 10  # unacknowledged submit_sm in flight on the connection
    # "transceiver": one connection; "transmitter_receiver": submit_sm on a bind_transmitter,
    # receipts and inbound messages on a bind_receiver, each re-bound on its own.
    bind_mode: str = "transceiver"
    enquire_link_interval: float = 30.0
    enquire_link_timeout: float = 10.0
    reconnect_initial: float = 0.5  # doubled after each failed attempt ...
    reconnect_max: float = 30.0  # ... up to this
    # How the SMSC writes ids in submit_sm_resp and in receipt texts (10, 16, or 0 for opaque ids
    # compared as written): the gateway's id style (smpp_ids). Unset, it is learned.
    submit_id_base: int | None = None
    receipt_id_base: int | None = None
    registered_delivery: int = 1  # final receipts, success and failure
    unbind_timeout: float = 1.0
    throttle_retry_after: float = 1.0
    receipt_batch: int = 500  # receipts committed together at most (one on_receipts call)
    # on_receipts calls in flight at once: while one batch commits, the next is read and
    # committed beside it (each answered after its own commit).
    receipt_concurrency: int = 3
    part_map_size: int = 100_000  # ids of non-last parts of long messages we still recognise
    # The gateway's own receipt status words beyond smpp_receipts.STATUS_WORDS, as a TOML table:
    # status_words = { DND_REJECTED = "failed", SUBMITD = "sent" }
    status_words: Mapping[str, str] = {}
    # Inbound messages (smpp_mo): the country code a national (TON 2) sender is in, and how long
    # the parts of a concatenated one are waited for before it is passed on with what came.
    mo_country_code: str = "45"
    mo_part_seconds: float = 60.0

    def __init__(
        self,
        config: GatewayConfig,
        callback_url: str,
        session: Any = None,  # the HTTP session other adapters share; SMPP has no use for it
        *,
        window: int | None = None,
        bind_mode: str | None = None,
        enquire_link_interval: float | None = None,
        enquire_link_timeout: float | None = None,
        reconnect_initial: float | None = None,
        reconnect_max: float | None = None,
        submit_id_base: int | None = None,
        receipt_id_base: int | None = None,
        registered_delivery: int | None = None,
        receipt_batch: int | None = None,
        receipt_concurrency: int | None = None,
        status_words: Mapping[str, str] | None = None,
        mo_country_code: str | None = None,
        mo_part_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.callback_url = callback_url
        self.endpoint = parse_config(config)
        overrides: Mapping[str, Any] = {
            "window": window,
            "bind_mode": bind_mode,
            "enquire_link_interval": enquire_link_interval,
            "enquire_link_timeout": enquire_link_timeout,
            "reconnect_initial": reconnect_initial,
            "reconnect_max": reconnect_max,
            "submit_id_base": submit_id_base,
            "receipt_id_base": receipt_id_base,
            "registered_delivery": registered_delivery,
            "receipt_batch": receipt_batch,
            "receipt_concurrency": receipt_concurrency,
            "status_words": status_words,
            "mo_country_code": mo_country_code,
            "mo_part_seconds": mo_part_seconds,
        }
        for name, value in overrides.items():
            if value is None:
                value = config.extra.get(name)
            if value is not None:
                setattr(self, name, value)
        for name in ("submit_id_base", "receipt_id_base"):
            if getattr(self, name) not in (None, 0, 10, 16):
                raise SmppConfigError(f"gateway {config.name!r}: {name} must be 0, 10 or 16")
        try:
            words = receipt_status_words(self.status_words)
        except ValueError as exc:
            raise SmppConfigError(f"gateway {config.name!r}: {exc}") from None
        if not 1 <= self.window <= 10_000:
            raise SmppConfigError(f"gateway {config.name!r}: window must be 1 to 10000")
        if self.bind_mode not in BIND_MODES:
            modes = " or ".join(repr(m) for m in BIND_MODES)
            raise SmppConfigError(f"gateway {config.name!r}: bind_mode must be {modes}")
        # The connections' roles, the one submit_sm go through first, the receiving one last.
        self._roles = BIND_MODES[self.bind_mode]
        self._links: dict[str, Link] = {}  # role -> its bound connection
        self._runners: list[asyncio.Task[None]] = []
        self._closing = False
        self._ref = 0
        self._inbound = Inbound(
            config.name,
            receipt_batch=self.receipt_batch,
            part_map_size=self.part_map_size,
            submit_id_base=self.submit_id_base,
            receipt_id_base=self.receipt_id_base,
            words=words,
            mo_country_code=self.mo_country_code,
            mo_part_seconds=self.mo_part_seconds,
        )

    @property
    def max_batch(self) -> int:
        return max(1, self.config.max_batch)

    @property
    def bound(self) -> bool:
        """Whether the connection submit_sm go through is bound (transceiver or transmitter)."""
        link = self._links.get(self._roles[0])
        return link is not None and link.usable

    @property
    def receiving(self) -> bool:
        """Whether the connection deliver_sm arrive on is bound (transceiver or receiver)."""
        link = self._links.get(self._roles[-1])
        return link is not None and link.usable

    # -- callbacks -------------------------------------------------------------------------------

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[ReceiptUpdate]:
        """SMPP has no HTTP callbacks."""
        raise CallbackRejected("smpp receipts arrive over the SMPP connection", status=404)

    def parse_inbound(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[InboundMessage]:
        """SMPP's inbound messages arrive as deliver_sm (smpp_mo), not over HTTP."""
        raise CallbackRejected("smpp inbound messages arrive over the SMPP connection", status=404)

    def inbound_reply(self, stored: int) -> tuple[str, bytes]:
        return "application/json", b'{"received":%d}' % stored
