"""Twilio status callbacks and incoming messages: the status words, and the verification
(X-Twilio-Signature, HMAC-SHA1 by the account's auth token over the URL and the sorted form
parameters) and reading of the form posts Twilio sends to a message's StatusCallback and to a
number's incoming-message webhook.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    InboundMessage,
    ReceiptUpdate,
    clean_text,
)

SIGNATURE_HEADER = "x-twilio-signature"
# "Attempt to send to unsubscribed recipient": the recipient answered STOP to this sender.
OPT_OUT_CODE = "21610"


# Provider status word -> our state. Anything not final maps to SENT so it never closes a delivery.
STATUS_MAP: dict[str, DeliveryState] = {
    "queued": DeliveryState.SENT,
    "accepted": DeliveryState.SENT,
    "scheduled": DeliveryState.SENT,
    "sending": DeliveryState.SENT,
    "sent": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "read": DeliveryState.DELIVERED,
    "undelivered": DeliveryState.FAILED,
    "failed": DeliveryState.FAILED,
    "canceled": DeliveryState.FAILED,
}


def state_for_status(status: str) -> DeliveryState:
    """Our state for a Twilio status word; unknown words are transient (SENT)."""
    return STATUS_MAP.get(status.strip().lower(), DeliveryState.SENT)


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """X-Twilio-Signature of a form POST: base64(HMAC-SHA1(auth token, URL + name+value pairs
    sorted by name))."""
    pairs = params.items() if isinstance(params, Mapping) else params
    data = url + "".join(name + value for name, value in sorted(pairs))
    return _signature(auth_token.encode(), data).decode("ascii")


def _signature(key: bytes, data: str) -> bytes:
    return base64.b64encode(hmac.digest(key, data.encode(), "sha1"))


def is_e164(phone: str) -> bool:
    """'+' followed by 2..15 ASCII digits."""
    digits = phone[1:]
    return (
        phone.startswith("+") and digits.isascii() and digits.isdigit() and 2 <= len(digits) <= 15
    )


def parse_status_callback(
    account_sid: str,
    auth_key: bytes,
    callback_variants: list[str],
    headers: Mapping[str, str],
    body: bytes,
    url: str,
) -> list[ReceiptUpdate]:
    """Verify one signed status callback and translate it; raise `CallbackRejected` if it
    fails. `url` must be the URL Twilio called, as it called it."""
    params = _verified_form(account_sid, auth_key, callback_variants, headers, body, url)
    message_sid = params.get("MessageSid", "").strip()
    status = params.get("MessageStatus", "").strip()
    if not message_sid or not status:
        missing = [k for k in ("MessageSid", "MessageStatus") if not params.get(k, "").strip()]
        raise CallbackRejected(f"missing {', '.join(missing)}", status=400)
    error_code = params.get("ErrorCode", "").strip()
    # Matched by MessageSid alone (phone None): Twilio's message SIDs are unique, and a `To`
    # written differently from the stored number must not keep the receipt from its delivery.
    # `To` stays in the stored raw parameters.
    return [
        ReceiptUpdate(
            gateway_message_id=message_sid,
            phone=None,
            state=state_for_status(status),
            provider_status=status,
            error=f"twilio {error_code}" if error_code else None,
            raw=params,
            opted_out=error_code == OPT_OUT_CODE,
            known_status=status.lower() in STATUS_MAP,
        )
    ]


def parse_incoming_message(
    account_sid: str,
    auth_key: bytes,
    url_variants: list[str],
    headers: Mapping[str, str],
    body: bytes,
    url: str,
) -> list[InboundMessage]:
    """Verify one signed incoming-message webhook request (MessageSid, From, To, Body, ...)
    and translate it; raise `CallbackRejected` if it fails. `url` must be the URL Twilio
    called; `url_variants` the number's webhook URL as we configured it."""
    params = _verified_form(account_sid, auth_key, url_variants, headers, body, url)
    message_sid = (params.get("MessageSid") or params.get("SmsSid") or "").strip()
    sender = params.get("From", "").strip()
    if not message_sid or not sender:
        missing = [k for k, v in (("MessageSid", message_sid), ("From", sender)) if not v]
        raise CallbackRejected(f"missing {', '.join(missing)}", status=400)
    if not is_e164(sender):
        raise CallbackRejected("From is not a phone number", status=400)
    # The number and the text are kept in their own columns only (see InboundMessage.raw).
    raw = {k: v for k, v in params.items() if k not in ("From", "Body")}
    return [InboundMessage(message_sid, sender, clean_text(params.get("Body", "")), None, raw)]


def _verified_form(
    account_sid: str,
    auth_key: bytes,
    url_variants: list[str],
    headers: Mapping[str, str],
    body: bytes,
    url: str,
) -> dict[str, str]:
    """The form parameters of a request signed by the account (or `CallbackRejected`)."""
    signature = _header(headers, SIGNATURE_HEADER)
    if not signature:
        raise CallbackRejected("missing X-Twilio-Signature", status=401)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CallbackRejected("body is not form-encoded UTF-8", status=400) from exc
    if not _signed(auth_key, url_variants, signature.strip(), url, pairs):
        raise CallbackRejected("invalid X-Twilio-Signature", status=401)
    params = dict(pairs)
    sent_for = params.get("AccountSid")
    if sent_for is not None and sent_for != account_sid:
        raise CallbackRejected("callback for another account", status=401)
    return params


def _signed(
    auth_key: bytes,
    callback_variants: list[str],
    signature: str,
    url: str,
    pairs: list[tuple[str, str]],
) -> bool:
    """Whether `signature` signs the parameters for `url` (or the callback URL we gave
    Twilio, which is what it calls even when a proxy rewrote the URL we see)."""
    urls = dict.fromkeys([*_port_variants(url), *callback_variants])
    # What every candidate signature covers after the URL (see `twilio_signature`).
    signed_params = "".join(name + value for name, value in sorted(pairs))
    expected = signature.encode()
    # Compare against every candidate so the time taken does not depend on which matched.
    matches = [
        hmac.compare_digest(_signature(auth_key, candidate + signed_params), expected)
        for candidate in urls
        if candidate
    ]
    return any(matches)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # fast path for CIMultiDict and exact-case dicts
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _port_variants(url: str) -> list[str]:
    """`url` as given and with its default port toggled: Twilio does not sign URLs consistently
    with or without an explicit :443 (its own validator checks both)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or "@" in parts.netloc or not parts.hostname:
        return [url]
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{host}:{default}"))]
    if port == default:
        return [url, urlunsplit(parts._replace(netloc=host))]
    return [url]
