"""The contract every SMS gateway adapter fulfils.

Adapters turn a batch of outbound messages into the provider's wire format and the provider's
answer into per-message results, and they turn a provider's callback request into receipt updates
and its inbound-message webhook into inbound messages, after verifying either. They never touch
the database and never retry: the dispatcher decides retry, fail-over or give-up from the typed
errors raised here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, Protocol

import aiohttp


class DeliveryState(enum.StrEnum):
    """Our delivery states. The receipt side only ever reports sent or a final state."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.EXPIRED, DeliveryState.CANCELLED}
)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One `[[gateways]]` entry of the configuration file."""

    name: str
    type: str
    base_url: str
    token: str = ""
    webhook_secret: str = ""
    rate_per_second: float = 500.0
    burst: float | None = None
    max_batch: int = 1000
    concurrency: int = 4
    timeout_seconds: float = 30.0
    sender: str = "POLITI"
    extra: Mapping[str, Any] = field(default_factory=dict)


# An adapter's own settings by name and the type their value must have (see GatewayAdapter.options).
OptionTypes = Mapping[str, type]


@dataclass(frozen=True, slots=True)
class AdapterLimits:
    """What a provider allows, declared by its adapter; None where the provider sets no fixed
    limit (it depends on the account). The registry caps a gateway's configuration to these."""

    recipients_per_request: int | None
    concurrent_requests: int | None
    messages_per_second: float | None


class OutboundMessage(NamedTuple):
    """One SMS to one recipient. `phone` is E.164 with a leading '+'. (A NamedTuple, like
    SendResult: one is made per message, and a frozen dataclass costs several times more.)"""

    delivery_id: int
    phone: str
    text: str
    alert_id: int
    priority: str = "normal"  # emergency | high | normal
    expires_at: datetime | None = None


class SendResult(NamedTuple):
    """The gateway's answer for one message of a batch.

    `accepted` False with an `error` is a permanent per-recipient rejection (invalid number, ...)
    unless `retryable` is set: then this one message met a transient failure (a one-request-per-
    message gateway answered 5xx or timed out for it) and may be tried again, after `retry_after`
    seconds when the gateway said so (throttling).

    `opted_out` marks a rejection because the recipient told the carrier to stop messages from
    this sender (Twilio 21610): the dispatcher opts the subscriber out, so nothing is sent to the
    number again. `expired` says the message's alert expired before it could be submitted:
    nothing went out, and the delivery ends as expired rather than failed.
    """

    delivery_id: int
    accepted: bool
    gateway_message_id: str | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    throttled: bool = False
    opted_out: bool = False
    expired: bool = False


@dataclass(frozen=True, slots=True)
class ReceiptUpdate:
    """A delivery receipt, already verified, in our terms.

    Receipts are matched to a delivery by `gateway_message_id` and, where a provider uses one id
    for several recipients (GatewayAPI), by `phone` too; `phone` is None where the id alone names
    the message (Twilio's MessageSid), so a recipient number written differently by the provider
    does not keep the receipt from its delivery.

    `opted_out`: the recipient told the carrier to stop messages from this sender (Twilio error
    21610); the subscriber is opted out. `known_status` is False when the provider's status word
    is not in the adapter's mapping: the receipt is kept and counted, and moves nothing.
    """

    gateway_message_id: str
    phone: str | None
    state: DeliveryState
    provider_status: str
    error: str | None = None
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    opted_out: bool = False
    known_status: bool = True


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An SMS a citizen sent to one of our numbers (mobile-originated), already verified.

    `gateway_message_id` is the provider's id of the message (GatewayAPI's MO id, Twilio's
    MessageSid): a message posted twice is stored once. SMPP gives a mobile-originated
    deliver_sm no id, so it is None there. `phone` is the sender in E.164 (`+4520123456`);
    `text` is the whole message, reassembled if it came in parts; `sent_at` is when the provider
    says it was sent, None where it does not say. `raw` keeps the provider's fields for audit,
    except the sender's number and the text, which are in `phone` and `text` only (so that
    nulling `phone` after the retention period leaves no copy of it).
    """

    gateway_message_id: str | None
    phone: str
    text: str
    sent_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """An inbound text as the database can store it: NULs dropped, lone UTF-16 surrogates
    (which JSON escapes can carry) replaced by U+FFFD."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


class GatewayError(Exception):
    """Raised by `send_batch` when the whole request failed. `retryable` tells the dispatcher."""

    retryable: ClassVar[bool] = True
    # A batch an adapter splits into several requests can fail part-way: these are the results of
    # the messages the gateway did accept, which must not be sent again.
    partial_results: tuple[SendResult, ...] = ()


class GatewayUnavailable(GatewayError):
    """5xx, timeout, connection reset: try again later or elsewhere.

    `maybe_taken`: the gateway may have taken the messages (no answer, a reset, an answer that
    cannot be read, a proxy's 502/504). False where nothing went out: the gateway answered that
    it failed (500, 503) or could not be reached at all; the dispatcher then leaves the
    messages their attempt, as under throttling, so an outage longer than the retries of a
    message last does not fail it."""

    def __init__(self, message: str, *, maybe_taken: bool = True) -> None:
        super().__init__(message)
        self.maybe_taken = maybe_taken


class GatewayThrottled(GatewayError):
    """429 or a throttling error: slow down; not a failure of the messages."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayRejected(GatewayError):
    """The gateway refused the whole request for good (bad request, invalid content)."""

    retryable = False


class GatewayMisconfigured(GatewayError):
    """Credentials, URL, sender or account settings are wrong (401/403/404, a sender the
    provider does not know, a priority the account's message class does not allow): every
    message would fail alike, so the batch goes to the next gateway and an operator must act."""

    retryable = False


class CallbackRejected(Exception):
    """A callback request failed verification (bad or missing signature) or could not be read."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class ReceiptsNotStored(Exception):
    """Raised by a `ReceiptSink`: the receipts were not stored for now (the database is away)
    and the cause has been reported already. The adapter refuses them, so that the gateway sends
    them again, and logs no more about it (during an outage, a traceback per batch of receipts
    would bury the one report that counts)."""


class GatewayAdapter(Protocol):
    """What the dispatcher and the callback endpoint need from a gateway."""

    type: ClassVar[str]
    limits: ClassVar[AdapterLimits]
    # Settings of this gateway type beyond GatewayConfig's own fields, by name and type: a
    # `[[gateways]]` entry may carry them, and they arrive in `config.extra`. Any other key in
    # an entry is refused at start (settings.py).
    options: ClassVar[OptionTypes]
    config: GatewayConfig

    @property
    def max_batch(self) -> int: ...

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Submit the messages; one result per message, or raise a `GatewayError`."""
        ...

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[ReceiptUpdate]:
        """Verify a callback request and translate it; raise `CallbackRejected` if it fails."""
        ...

    def parse_inbound(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[InboundMessage]:
        """Verify a request of the provider's inbound-message webhook (signed like its
        receipts) and translate it; raise `CallbackRejected` if it fails (404 for a gateway
        whose inbound messages do not come over HTTP)."""
        ...

    def inbound_reply(self, stored: int) -> tuple[str, bytes]:
        """The content type and body of the 2xx answer the provider expects once the inbound
        messages of a request are stored (Twilio: empty TwiML)."""
        ...

    async def start(self, on_receipts: ReceiptSink) -> None:
        """Open long-lived connections, if the protocol has them (SMPP), and hand every receipt
        that arrives on them to `on_receipts`, which returns once they are stored or raises
        (`ReceiptsNotStored`: not now, already reported), and every inbound message to its
        `inbound` (see below). HTTP adapters do nothing here: their receipts arrive through
        `parse_callback`, their inbound messages through `parse_inbound`."""
        ...

    async def close(self) -> None: ...


# Where an adapter hands the receipts that arrive on its own connections (SMPP).
ReceiptSink = Callable[[list[ReceiptUpdate]], Awaitable[None]]
# The service's sink may also answer `known_message_ids(ids)`: which of these message ids name a
# delivery sent through the gateway. An adapter whose receipts can name a message more than one
# way (SMPP, while it has not learned how the SMSC writes ids) asks it rather than guess.
MessageIdLookup = Callable[[Sequence[str]], Awaitable[Collection[str]]]
# It may also answer `inbound(messages)`: store these inbound messages (and act on them); it
# returns once they are committed and raises if they were not. An adapter whose inbound messages
# arrive on its own connections (SMPP) acknowledges them only after that returned; without it,
# they are acknowledged and dropped.
InboundSink = Callable[[list[InboundMessage]], Awaitable[None]]


def error_for_status(status: int, body: str, retry_after: str | None = None) -> GatewayError:
    """Map a non-2xx HTTP answer of any provider to the error taxonomy."""
    snippet = body[:200]
    if status == 429:
        return GatewayThrottled(f"HTTP 429: {snippet}", parse_retry_after(retry_after))
    if status in (401, 403, 404):
        return GatewayMisconfigured(f"HTTP {status}: {snippet}")
    if status >= 500 or status in (408, 425):
        # A proxy's 502 and 504 may follow a request the gateway behind it took.
        return GatewayUnavailable(f"HTTP {status}: {snippet}", maybe_taken=status in (502, 504))
    return GatewayRejected(f"HTTP {status}: {snippet}")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for SMS APIs and treated as absent)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def new_http_session(config: GatewayConfig) -> aiohttp.ClientSession:
    """A client session tuned for many small requests to one host."""
    connector = aiohttp.TCPConnector(limit=max(4, config.concurrency * 2), ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)
